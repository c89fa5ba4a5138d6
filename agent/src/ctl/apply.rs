//! `tortiectl apply -f FILE`: create or update resources from documents, all checked first.

use std::path::PathBuf;

use anyhow::{Result, anyhow};
use clap::Args;

use super::datastore::Datastore;
use super::manifest::{Source, kind_word};

#[derive(Args)]
pub struct ApplyArgs {
    /// A YAML (or JSON) file of resources, `-` for standard input.
    #[arg(short = 'f', long = "filename")]
    pub file: PathBuf,
}

pub fn run(datastore: &Datastore, args: ApplyArgs) -> Result<u8> {
    let source = Source::read(&args.file)?;
    // Every document is read and checked before the datastore is even opened, so a bad
    // file writes nothing (and creates no datastore).
    let resources = source.resources()?;
    let ipam = datastore.open_or_create()?;
    let (numbers, resources): (Vec<usize>, Vec<_>) = resources.into_iter().unzip();
    ipam.check_resources(&resources).map_err(|(index, error)| {
        anyhow!(
            "{}: document {}: {error}; nothing was applied",
            source.label,
            numbers[index]
        )
    })?;
    for (number, resource) in numbers.into_iter().zip(resources) {
        let kind = kind_word(resource.kind());
        let name = resource.name();
        let applied = ipam.apply_resource(resource).map_err(|error| {
            anyhow!(
                "{}: document {number}: {kind} {name}: {error} (the documents before it were applied)",
                source.label
            )
        })?;
        println!("{kind} {name} {applied}");
    }
    Ok(0)
}
