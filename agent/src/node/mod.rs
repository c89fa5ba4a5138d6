//! `tortie-node run`: the node agent. It registers the node, claims its blocks, runs the
//! BGP mesh and makes the kernel's routes and tunnel devices match what BGP and the
//! datastore say.

pub mod bgp;
pub mod cluster;
pub mod config;
pub mod http;
pub mod mesh;
pub mod run;
pub mod watch;
