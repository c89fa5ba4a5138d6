//! `tortiectl get TYPE [NAME] [-o table|json|yaml]`, with calicoctl's tables. JSON and YAML
//! print documents that `apply -f` reads back: one resource for a name, else a `<Kind>List`.

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use ipnet::IpNet;
use serde_json::Value;
use tortie_ipam::document::{write_document, write_list};
use tortie_ipam::model::block_name;
use tortie_ipam::{BGPConfiguration, Kind, Resource, Store};

use super::datastore::Datastore;
use super::manifest::{kind_word, parse_resource_type};
use super::table::Table;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

#[derive(Args)]
pub struct GetArgs {
    /// nodes, ippools, bgppeers, bgpconfigurations, ipreservations, blocks or affinities
    /// (singular and calicoctl's short names work too).
    pub kind: String,
    /// Only this one; an error if it does not exist.
    pub name: Option<String>,
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: Format,
}

pub fn run(datastore: &Datastore, args: GetArgs) -> Result<u8> {
    let kind = parse_resource_type(&args.kind)?;
    let ipam = datastore.open_existing()?;
    let resources: Vec<Resource> = match &args.name {
        Some(name) => {
            // A block can be named by its CIDR too.
            let key = match (kind, name.parse::<IpNet>()) {
                (Kind::IPAMBlock, Ok(cidr)) => block_name(&cidr),
                _ => name.clone(),
            };
            match ipam.store().get(kind, &key)? {
                Some(versioned) => vec![(*versioned.value).clone()],
                None => bail!(
                    "{} {name} does not exist (see `tortiectl get {}`)",
                    kind_word(kind),
                    kind_word(kind)
                ),
            }
        }
        None => ipam
            .store()
            .list(kind, None)?
            .into_iter()
            .map(|versioned| (*versioned.value).clone())
            .collect(),
    };
    let document = match (&args.name, resources.as_slice()) {
        (Some(_), [one]) => write_document(one),
        _ => write_list(kind, &resources),
    };
    match args.output {
        Format::Json => println!("{}", serde_json::to_string_pretty(&document)?),
        Format::Yaml => print!("{}", yaml(&document)?),
        Format::Table => {
            let config = if kind == Kind::Node {
                ipam.bgp_configuration()?
            } else {
                BGPConfiguration::cluster_default()
            };
            print!("{}", table(kind, &resources, &config).render());
        }
    }
    Ok(0)
}

fn yaml(document: &Value) -> Result<String> {
    Ok(serde_saphyr::to_string(document)?)
}

fn or_empty(value: Option<String>) -> String {
    value.unwrap_or_default()
}

/// calicoctl's columns (its `-o wide` ones for nodes and peers, which say the most).
fn table(kind: Kind, resources: &[Resource], config: &BGPConfiguration) -> Table {
    let headers: &[&str] = match kind {
        Kind::Node => &["NAME", "ASN", "IPV4", "IPV6"],
        Kind::IPPool => &["NAME", "CIDR", "SELECTOR"],
        Kind::BGPPeer => &["NAME", "PEERIP", "NODE", "ASN"],
        Kind::BGPConfiguration => &["NAME", "LOGSEVERITY", "MESHENABLED", "ASNUMBER"],
        Kind::IPReservation => &["NAME", "RESERVEDCIDRS"],
        Kind::IPAMBlock => &["NAME", "CIDR", "NODE", "IN USE", "FREE"],
        Kind::BlockAffinity => &["NAME", "NODE", "CIDR", "STATE"],
        _ => &["NAME"],
    };
    let mut table = Table::new(headers);
    for resource in resources {
        let row = match resource {
            Resource::Node(node) => {
                let bgp = node.bgp.as_ref();
                // calicoctl shows an AS the node inherits in parentheses.
                let asn = match bgp.and_then(|bgp| bgp.as_number) {
                    Some(own) => own.to_string(),
                    None => format!("({})", config.as_number()),
                };
                vec![
                    node.name.clone(),
                    asn,
                    or_empty(bgp.and_then(|b| b.ipv4_address).map(|a| a.to_string())),
                    or_empty(bgp.and_then(|b| b.ipv6_address).map(|a| a.to_string())),
                ]
            }
            Resource::IPPool(pool) => vec![
                pool.name.clone(),
                pool.cidr.to_string(),
                pool.node_selector.clone(),
            ],
            Resource::BGPPeer(peer) => vec![
                peer.name.clone(),
                match (&peer.peer_ip, &peer.peer_selector) {
                    (Some(address), _) => address.clone(),
                    (None, Some(selector)) => format!("peerSelector: {selector}"),
                    (None, None) => String::new(),
                },
                match (&peer.node, &peer.node_selector) {
                    (Some(node), _) => node.clone(),
                    (None, Some(selector)) => selector.clone(),
                    (None, None) => "(global)".to_string(),
                },
                or_empty(peer.as_number.map(|asn| asn.to_string())),
            ],
            Resource::BGPConfiguration(config) => vec![
                config.name.clone(),
                config
                    .log_severity_screen
                    .clone()
                    .unwrap_or_else(|| "Info".to_string()),
                config.node_to_node_mesh_enabled().to_string(),
                config.as_number().to_string(),
            ],
            Resource::IPReservation(reservation) => vec![
                reservation.name.clone(),
                reservation
                    .reserved_cidrs
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            ],
            Resource::IPAMBlock(block) => vec![
                resource.name(),
                block.cidr.to_string(),
                or_empty(block.affinity_node().map(str::to_string)),
                block.in_use().to_string(),
                block.free().to_string(),
            ],
            Resource::BlockAffinity(affinity) => vec![
                resource.name(),
                affinity.node.clone(),
                affinity.cidr.to_string(),
                affinity.state.to_string(),
            ],
            other => vec![other.name()],
        };
        table.row(row);
    }
    table
}
