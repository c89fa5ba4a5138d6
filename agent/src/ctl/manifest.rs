//! Resource files as `tortiectl apply -f` and `delete -f` read them, and resource types as
//! `get` and `delete` name them.
//!
//! A file is one or more YAML documents separated by `---` (JSON is YAML, so a JSON
//! document works too); `-` is standard input. Every document is read and checked before
//! anything is written, and an error names the file, the document's number (counting the
//! non-empty documents from 1), the field and the valid forms.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use tortie_ipam::document::{identify_document, read_document};
use tortie_ipam::{Kind, Resource};

/// A file's text and the name to call it by in messages.
pub struct Source {
    pub label: String,
    pub text: String,
}

impl Source {
    /// Reads `path`, or standard input for `-`.
    pub fn read(path: &Path) -> Result<Source> {
        if path == Path::new("-") {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading resources from standard input")?;
            return Ok(Source {
                label: "<stdin>".to_string(),
                text,
            });
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading resources from {}", path.display()))?;
        Ok(Source {
            label: path.display().to_string(),
            text,
        })
    }

    /// The file's documents, parsed but not yet read as resources.
    pub fn documents(&self) -> Result<Vec<Value>> {
        let documents: Vec<Value> = serde_saphyr::from_multiple(&self.text).map_err(|error| {
            anyhow!(
                "{}: not valid YAML: {error}; expected documents like\n  apiVersion: projectcalico.org/v3\n  kind: BGPPeer\n  metadata: {{name: tor-1}}\n  spec: {{peerIP: 192.0.2.1, asNumber: 64513}}",
                self.label
            )
        })?;
        if documents.is_empty() {
            bail!("{}: holds no document; nothing to do", self.label);
        }
        Ok(documents)
    }

    /// Every resource of the file, each with the number of the document it came from,
    /// checked on its own. The first bad document fails the whole file.
    pub fn resources(&self) -> Result<Vec<(usize, Resource)>> {
        let mut resources = Vec::new();
        for (index, document) in self.documents()?.into_iter().enumerate() {
            let number = index + 1;
            let read = read_document(document)
                .map_err(|error| anyhow!("{}: document {number}: {error}", self.label))?;
            resources.extend(read.into_iter().map(|resource| (number, resource)));
        }
        Ok(resources)
    }

    /// The kind and name of every resource of the file (for `delete -f`: specs unread).
    pub fn names(&self) -> Result<Vec<(usize, Kind, String)>> {
        let mut names = Vec::new();
        for (index, document) in self.documents()?.into_iter().enumerate() {
            let number = index + 1;
            let read = identify_document(document)
                .map_err(|error| anyhow!("{}: document {number}: {error}", self.label))?;
            names.extend(read.into_iter().map(|(kind, name)| (number, kind, name)));
        }
        Ok(names)
    }
}

/// The resource types `get` and `delete` take, with the names calicoctl users type.
const RESOURCE_TYPES: [(&[&str], Kind); 7] = [
    (&["nodes", "node", "no"], Kind::Node),
    (&["ippools", "ippool", "pools", "pool"], Kind::IPPool),
    (&["bgppeers", "bgppeer", "peers", "peer"], Kind::BGPPeer),
    (
        &[
            "bgpconfigurations",
            "bgpconfiguration",
            "bgpconfigs",
            "bgpconfig",
        ],
        Kind::BGPConfiguration,
    ),
    (
        &[
            "ipreservations",
            "ipreservation",
            "reservations",
            "reservation",
        ],
        Kind::IPReservation,
    ),
    (
        &["blocks", "block", "ipamblocks", "ipamblock"],
        Kind::IPAMBlock,
    ),
    (
        &["affinities", "affinity", "blockaffinities", "blockaffinity"],
        Kind::BlockAffinity,
    ),
];

/// A resource type as typed on the command line (any case, singular or plural).
pub fn parse_resource_type(text: &str) -> Result<Kind> {
    let lower = text.to_ascii_lowercase();
    RESOURCE_TYPES
        .iter()
        .find(|(names, _)| names.contains(&lower.as_str()))
        .map(|(_, kind)| *kind)
        .ok_or_else(|| {
            let valid: Vec<&str> = RESOURCE_TYPES.iter().map(|(names, _)| names[0]).collect();
            anyhow!(
                "unknown resource type \"{text}\"; valid: {}",
                valid.join(", ")
            )
        })
}

/// How a kind is named in one-line reports: `bgppeer tor-1 created`.
pub fn kind_word(kind: Kind) -> String {
    kind.as_str().to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(text: &str) -> Source {
        Source {
            label: "peers.yaml".to_string(),
            text: text.to_string(),
        }
    }

    #[test]
    fn reads_every_document_and_names_the_bad_one() {
        let good = source(
            "---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor-1\nspec:\n  peerIP: 192.0.2.1\n  asNumber: 64513\n---\napiVersion: tortie.dev/v1\nkind: Node\nmetadata:\n  name: node-a\n  labels: {rack: 1}\nspec:\n  bgp:\n    ipv6Address: 2001:db8::10/64\n  vxlanTunnelMACAddr: 66:0a:1b:2c:3d:4e\n---\n",
        );
        let resources = good.resources().unwrap();
        assert_eq!(resources.len(), 2);
        assert_eq!(resources[1].0, 2);
        assert_eq!(resources[1].1.kind(), Kind::Node);

        let bad = source(
            "apiVersion: tortie.dev/v1\nkind: BGPPeer\nmetadata: {name: tor-1}\nspec: {peerIP: 192.0.2.1, asNumber: 64513}\n---\napiVersion: tortie.dev/v1\nkind: BGPPeer\nmetadata: {name: tor-2}\nspec: {peerIP: 192.0.2.999, asNumber: 64513}\n",
        );
        let error = bad.resources().unwrap_err().to_string();
        assert!(
            error.starts_with("peers.yaml: document 2: BGPPeer tor-2: spec.peerIP:"),
            "{error}"
        );
        let broken = source("kind: [unclosed\n");
        let error = broken.resources().unwrap_err().to_string();
        assert!(error.contains("peers.yaml: not valid YAML"), "{error}");
        assert!(source("").resources().is_err());
        let names = good.names().unwrap();
        assert_eq!(names[0], (1, Kind::BGPPeer, "tor-1".to_string()));
    }

    #[test]
    fn resource_types_take_calicoctl_names() {
        for (text, kind) in [
            ("nodes", Kind::Node),
            ("Node", Kind::Node),
            ("pool", Kind::IPPool),
            ("ipPools", Kind::IPPool),
            ("peers", Kind::BGPPeer),
            ("bgpPeer", Kind::BGPPeer),
            ("bgpconfig", Kind::BGPConfiguration),
            ("blocks", Kind::IPAMBlock),
            ("affinities", Kind::BlockAffinity),
        ] {
            assert_eq!(parse_resource_type(text).unwrap(), kind, "{text}");
        }
        let error = parse_resource_type("pods").unwrap_err().to_string();
        assert!(error.contains("valid: nodes, ippools, bgppeers"), "{error}");
    }
}
