//! tortie's shell around its cores: the binaries (`tortie-node` now; `tortiectl` and the CNI
//! plugins as they arrive) and the I/O they own — netlink, sockets, files, the Kubernetes
//! API. The decisions themselves live in the core crates (`tortie-autodetect`, ...), which
//! take plain data and return plain data; this crate gathers that data and acts on the
//! result.

pub mod api;
pub mod autodetect;
pub mod cni;
pub mod ctl;
pub mod dataplane;
pub mod kubernetes;
pub mod node;
