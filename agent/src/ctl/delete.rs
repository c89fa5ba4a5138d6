//! `tortiectl delete KIND NAME` and `delete -f FILE`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use tortie_ipam::{Ipam, Kind, SqliteStore, Store};

use super::datastore::Datastore;
use super::manifest::{Source, kind_word, parse_resource_type};

#[derive(Args)]
pub struct DeleteArgs {
    /// The resource type: node, ippool, bgppeer, bgpconfiguration, ipreservation.
    #[arg(required_unless_present = "file", requires = "name")]
    pub kind: Option<String>,
    pub name: Option<String>,
    /// Delete every resource a file names (as `apply -f` would read it), `-` for stdin.
    #[arg(short = 'f', long = "filename", conflicts_with_all = ["kind", "name"])]
    pub file: Option<PathBuf>,
}

pub fn run(datastore: &Datastore, args: DeleteArgs) -> Result<u8> {
    let targets: Vec<(Kind, String)> = match (&args.file, args.kind, args.name) {
        (Some(path), _, _) => {
            let source = Source::read(path)?;
            source
                .names()?
                .into_iter()
                .map(|(_, kind, name)| (kind, name))
                .collect()
        }
        (None, Some(kind), Some(name)) => vec![(parse_resource_type(&kind)?, name)],
        _ => {
            bail!("give a resource type and name (delete bgppeer tor-1) or a file (delete -f FILE)")
        }
    };
    let ipam = datastore.open_existing()?;
    // All present, or nothing is deleted.
    for (kind, name) in &targets {
        if !exists(&ipam, *kind, name)? {
            bail!(
                "{} {name} does not exist (see `tortiectl get {}`); nothing was deleted",
                kind_word(*kind),
                kind_word(*kind)
            );
        }
    }
    for (kind, name) in targets {
        let word = kind_word(kind);
        if kind == Kind::Node {
            let deleted = ipam
                .delete_node(&name)
                .with_context(|| format!("deleting node {name}"))?;
            println!("node {name} deleted");
            for address in &deleted.released_tunnel_addresses {
                println!("  released tunnel address {address}");
            }
            for block in &deleted.released_blocks {
                println!("  released block {block}");
            }
            for block in &deleted.kept_blocks {
                println!(
                    "  kept block {block}: it still holds addresses (release them with `tortiectl ipam release`, then delete the node again)"
                );
            }
        } else {
            ipam.delete_resource(kind, &name)
                .with_context(|| format!("deleting {word} {name}"))?;
            println!("{word} {name} deleted");
        }
    }
    Ok(0)
}

fn exists(ipam: &Ipam<SqliteStore>, kind: Kind, name: &str) -> Result<bool> {
    if ipam.store().get(kind, name)?.is_some() {
        return Ok(true);
    }
    // A node whose Node is gone can still own blocks: deleting it releases them.
    Ok(kind == Kind::Node && !ipam.affinities(Some(name))?.is_empty())
}
