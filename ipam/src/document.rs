//! Resources as an operator writes and reads them: Calico's document shape,
//!
//! ```yaml
//! apiVersion: projectcalico.org/v3   # or tortie.dev/v1
//! kind: BGPPeer
//! metadata: {name: tor-1}
//! spec: {peerIP: 192.0.2.1, asNumber: 64513}
//! ```
//!
//! so that a Calico user's manifests apply unchanged (for the fields tortie has). Reading
//! goes field by field, so that every refusal names the field as the document spells it
//! (`spec.peerIP`) and the valid forms; unknown fields are refused too, since a misspelt
//! field silently ignored is a setting silently lost. A document is checked on its own
//! here (the same rules as [`crate::Ipam::apply_resource`]); what depends on the store
//! (address conflicts, pool overlaps) is [`crate::Ipam::check_resources`].
//!
//! The input is a [`serde_json::Value`], whatever the text was (YAML or JSON), so the
//! reader is the same for both and this crate parses no YAML.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::cluster::{
    BGPConfiguration, BGPPeer, ClusterError, Node, NodeBGPSpec, SourceAddress,
    parse_address_with_prefix_v4, parse_address_with_prefix_v6, parse_duration,
    validate_bgp_configuration, validate_bgp_peer, validate_name, validate_node,
};
use crate::error::IpamError;
use crate::model::{
    AllowedUse, DEFAULT_BLOCK_SIZE_V4, DEFAULT_BLOCK_SIZE_V6, EncapsulationMode, IPPool,
    IPReservation, Kind, Resource,
};
use crate::pools::validate_pool;

/// The API versions accepted: Calico's, so its users can paste their manifests, and ours.
pub const API_VERSIONS: [&str; 2] = ["projectcalico.org/v3", "tortie.dev/v1"];
/// The API version written on output.
pub const API_VERSION: &str = "tortie.dev/v1";

/// The kinds an operator applies.
pub const APPLICABLE_KINDS: [Kind; 5] = [
    Kind::IPPool,
    Kind::IPReservation,
    Kind::Node,
    Kind::BGPPeer,
    Kind::BGPConfiguration,
];

/// Metadata Kubernetes and calicoctl write on output, accepted and ignored on input so
/// that `calicoctl get -o yaml` output applies.
const IGNORED_METADATA: [&str; 8] = [
    "namespace",
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "annotations",
    "managedFields",
    "selfLink",
];

/// A document that cannot be read. `field` is a path in the document (`spec.bgp.asNumber`,
/// `items[2].metadata.name`); `kind` and `name` are given once they are known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{field}: {problem}", describe(kind.as_deref(), name.as_deref()))]
pub struct DocumentError {
    pub kind: Option<String>,
    pub name: Option<String>,
    pub field: String,
    pub problem: String,
}

fn describe(kind: Option<&str>, name: Option<&str>) -> String {
    match (kind, name) {
        (Some(kind), Some(name)) => format!("{kind} {name}: "),
        (Some(kind), None) => format!("{kind}: "),
        _ => String::new(),
    }
}

/// A field and what is wrong with it, before the document's kind and name are attached.
struct Problem {
    field: String,
    problem: String,
}

impl Problem {
    fn new(field: impl Into<String>, problem: impl Into<String>) -> Problem {
        Problem {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// The members of one object of a document, taken one by one; what is left at the end was
/// not expected.
struct Fields {
    path: String,
    members: Map<String, Value>,
}

impl Fields {
    /// `value` must be a mapping; `null` (an empty `spec:`) reads as an empty one.
    fn new(path: &str, value: Value) -> Result<Fields, Problem> {
        match value {
            Value::Object(members) => Ok(Fields {
                path: path.to_string(),
                members,
            }),
            Value::Null => Ok(Fields {
                path: path.to_string(),
                members: Map::new(),
            }),
            other => Err(Problem::new(
                path,
                format!("expected a mapping of fields, found {}", what(&other)),
            )),
        }
    }

    fn field(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The member's value; absent and `null` are both `None`.
    fn raw(&mut self, key: &str) -> Option<Value> {
        self.members.remove(key).filter(|value| !value.is_null())
    }

    /// A member read as `T`; `expected` says what valid values look like.
    fn take<T: DeserializeOwned>(
        &mut self,
        key: &str,
        expected: &str,
    ) -> Result<Option<T>, Problem> {
        let field = self.field(key);
        self.raw(key)
            .map(|value| {
                let shown = show(&value);
                serde_json::from_value(value).map_err(|_| {
                    Problem::new(&field, format!("{shown} is not valid; expected {expected}"))
                })
            })
            .transpose()
    }

    /// A text member, parsed by `parse` (whose error names the valid forms).
    fn parse<T>(
        &mut self,
        key: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, Problem> {
        let field = self.field(key);
        match self.raw(key) {
            None => Ok(None),
            Some(Value::String(text)) => parse(&text)
                .map(Some)
                .map_err(|problem| Problem::new(field, problem)),
            Some(other) => {
                // A number or bool where text was meant (YAML reads `179` as a number):
                // parse its text, so the message is about the value, not its type.
                parse(&scalar_text(&other).ok_or_else(|| {
                    Problem::new(&field, format!("expected text, found {}", what(&other)))
                })?)
                .map(Some)
                .map_err(|problem| Problem::new(field, problem))
            }
        }
    }

    /// `asNumber`: an integer, or asdot text. YAML reads an unquoted asdot `1.10` as the
    /// number 1.1, which has lost the digit that mattered: refused, asking for quotes.
    fn as_number(&mut self) -> Result<Option<u32>, Problem> {
        if let Some(Value::Number(number)) = self.members.get("asNumber")
            && !number.is_u64()
        {
            return Err(Problem::new(
                self.field("asNumber"),
                format!(
                    "{number} is not an AS number; valid forms: 1–4294967295 (e.g. 64512), or asdot in quotes (\"1.10\")"
                ),
            ));
        }
        self.parse("asNumber", parse_as_number)
    }

    fn text(&mut self, key: &str) -> Result<Option<String>, Problem> {
        self.parse(key, |text| Ok(text.to_string()))
    }

    fn boolean(&mut self, key: &str) -> Result<Option<bool>, Problem> {
        self.take(key, "true or false")
    }

    fn nested(&mut self, key: &str) -> Result<Option<Fields>, Problem> {
        let path = self.field(key);
        self.raw(key)
            .map(|value| Fields::new(&path, value))
            .transpose()
    }

    /// Refuses whatever was not taken, naming the fields that are valid here.
    fn finish(self, valid: &[&str]) -> Result<(), Problem> {
        match self.members.keys().next() {
            None => Ok(()),
            Some(key) => Err(Problem::new(
                self.field(key),
                format!("unknown field; valid fields here: {}", valid.join(", ")),
            )),
        }
    }
}

fn what(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "true/false",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn show(value: &Value) -> String {
    match value {
        Value::Array(_) | Value::Object(_) => what(value).to_string(),
        other => other.to_string(),
    }
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

/// An AS number: `64512`, `"64512"`, or asdot `1.10` (RFC 5396: 1 × 65536 + 10).
fn parse_as_number(text: &str) -> Result<u32, String> {
    let invalid = || {
        format!(
            "\"{text}\" is not an AS number; valid forms: 1–4294967295 (e.g. 64512), or asdot 1.10"
        )
    };
    match text.trim().split_once('.') {
        None => text.trim().parse::<u32>().map_err(|_| invalid()),
        Some((high, low)) => {
            let high: u16 = high.parse().map_err(|_| invalid())?;
            let low: u16 = low.parse().map_err(|_| invalid())?;
            Ok(u32::from(high) << 16 | u32::from(low))
        }
    }
}

fn parse_port(text: &str) -> Result<u16, String> {
    text.trim()
        .parse::<u16>()
        .map_err(|_| format!("\"{text}\" is not a port; valid: 1–65535"))
}

fn parse_encapsulation(text: &str) -> Result<EncapsulationMode, String> {
    text.parse()
}

fn parse_v4(text: &str) -> Result<Ipv4Addr, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("\"{text}\" is not an IPv4 address; valid form: 198.18.0.1"))
}

fn parse_v6(text: &str) -> Result<Ipv6Addr, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("\"{text}\" is not an IPv6 address; valid form: 2001:db8::1"))
}

/// A CIDR, or a bare address as its /32 or /128 (Calico's reservedCIDRs take both).
fn parse_cidr_or_address(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net);
    }
    text.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
        format!("\"{text}\" is not a CIDR or address; valid forms: 198.18.0.0/24, 198.18.0.1, 2001:db8::/120")
    })
}

/// Reads one document: a single resource, or a `List` (calicoctl's and `tortiectl get`'s
/// output without a name) of them.
pub fn read_document(value: Value) -> Result<Vec<Resource>, DocumentError> {
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let kind = kind.as_str();
    if kind.ends_with("List") {
        let mut fields = Fields::new("", value).map_err(|p| attach(p, None, None))?;
        check_api_version(&mut fields).map_err(|p| attach(p, Some(kind), None))?;
        fields.raw("kind");
        fields.raw("metadata");
        let items = match fields.raw("items") {
            Some(Value::Array(items)) => items,
            None => Vec::new(),
            Some(other) => {
                return Err(attach(
                    Problem::new(
                        "items",
                        format!("expected a list of resources, found {}", what(&other)),
                    ),
                    Some(kind),
                    None,
                ));
            }
        };
        fields
            .finish(&["apiVersion", "kind", "metadata", "items"])
            .map_err(|p| attach(p, Some(kind), None))?;
        let mut resources = Vec::with_capacity(items.len());
        for (index, item) in items.into_iter().enumerate() {
            resources.push(read_resource(item).map_err(|mut error| {
                error.field = format!("items[{index}].{}", error.field);
                error
            })?);
        }
        return Ok(resources);
    }
    Ok(vec![read_resource(value)?])
}

fn attach(problem: Problem, kind: Option<&str>, name: Option<&str>) -> DocumentError {
    DocumentError {
        kind: kind.map(str::to_string),
        name: name.map(str::to_string),
        field: problem.field,
        problem: problem.problem,
    }
}

fn check_api_version(fields: &mut Fields) -> Result<(), Problem> {
    let valid = format!("valid: {}", API_VERSIONS.join(", "));
    match fields.text("apiVersion")? {
        None => Err(Problem::new("apiVersion", format!("missing; {valid}"))),
        Some(version) if API_VERSIONS.contains(&version.as_str()) => Ok(()),
        Some(version) => Err(Problem::new(
            "apiVersion",
            format!("\"{version}\"; {valid}"),
        )),
    }
}

/// The kind named by a document's `kind`, among those an operator applies.
pub fn parse_kind(text: &str) -> Result<Kind, String> {
    APPLICABLE_KINDS
        .into_iter()
        .find(|kind| kind.as_str() == text)
        .ok_or_else(|| {
            let valid: Vec<&str> = APPLICABLE_KINDS.iter().map(|kind| kind.as_str()).collect();
            match Kind::parse(text) {
                Some(kind) => format!(
                    "{kind} is written by tortie itself and cannot be applied; valid: {}",
                    valid.join(", ")
                ),
                None => format!("\"{text}\"; valid: {}", valid.join(", ")),
            }
        })
}

/// The kind and name of a document (or of each item of a List), without reading its spec:
/// what `delete -f` needs.
pub fn identify_document(value: Value) -> Result<Vec<(Kind, String)>, DocumentError> {
    let read = |value: Value| -> Result<(Kind, String), DocumentError> {
        let mut fields = Fields::new("", value).map_err(|p| attach(p, None, None))?;
        check_api_version(&mut fields).map_err(|p| attach(p, None, None))?;
        let kind_text = fields
            .text("kind")
            .map_err(|p| attach(p, None, None))?
            .unwrap_or_default();
        let kind = parse_kind(&kind_text)
            .map_err(|problem| attach(Problem::new("kind", problem), None, None))?;
        let mut metadata = fields
            .nested("metadata")
            .map_err(|p| attach(p, Some(kind.as_str()), None))?
            .ok_or_else(|| {
                attach(
                    Problem::new("metadata.name", "missing"),
                    Some(kind.as_str()),
                    None,
                )
            })?;
        let name = metadata
            .text("name")
            .map_err(|p| attach(p, Some(kind.as_str()), None))?
            .ok_or_else(|| {
                attach(
                    Problem::new("metadata.name", "missing"),
                    Some(kind.as_str()),
                    None,
                )
            })?;
        Ok((kind, name))
    };
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if kind.ends_with("List") {
        let items = match value.get("items") {
            Some(Value::Array(items)) => items.clone(),
            _ => Vec::new(),
        };
        return items
            .into_iter()
            .enumerate()
            .map(|(index, item)| {
                read(item).map_err(|mut error| {
                    error.field = format!("items[{index}].{}", error.field);
                    error
                })
            })
            .collect();
    }
    Ok(vec![read(value)?])
}

/// Reads one resource document and checks it on its own.
pub fn read_resource(value: Value) -> Result<Resource, DocumentError> {
    let mut top = Fields::new("", value).map_err(|p| attach(p, None, None))?;
    check_api_version(&mut top).map_err(|p| attach(p, None, None))?;
    let kind = match top.text("kind").map_err(|p| attach(p, None, None))? {
        None => {
            let valid: Vec<&str> = APPLICABLE_KINDS.iter().map(|kind| kind.as_str()).collect();
            return Err(attach(
                Problem::new("kind", format!("missing; valid: {}", valid.join(", "))),
                None,
                None,
            ));
        }
        Some(text) => parse_kind(&text)
            .map_err(|problem| attach(Problem::new("kind", problem), None, None))?,
    };
    let kind_name = kind.as_str();
    let mut metadata = top
        .nested("metadata")
        .map_err(|p| attach(p, Some(kind_name), None))?
        .ok_or_else(|| {
            attach(
                Problem::new("metadata", "missing; give at least metadata.name"),
                Some(kind_name),
                None,
            )
        })?;
    let name = metadata
        .text("name")
        .map_err(|p| attach(p, Some(kind_name), None))?
        .ok_or_else(|| {
            attach(
                Problem::new("metadata.name", "missing"),
                Some(kind_name),
                None,
            )
        })?;
    let on_error = |problem: Problem| attach(problem, Some(kind_name), Some(&name));
    let labels = read_labels(&mut metadata).map_err(on_error)?;
    for ignored in IGNORED_METADATA {
        metadata.raw(ignored);
    }
    let mut valid_metadata = vec!["name"];
    if kind == Kind::Node {
        valid_metadata.push("labels");
    } else if !labels.is_empty() {
        return Err(on_error(Problem::new(
            "metadata.labels",
            format!("tortie keeps labels only on Nodes; remove them from this {kind_name}"),
        )));
    }
    valid_metadata.extend(IGNORED_METADATA);
    metadata.finish(&valid_metadata).map_err(on_error)?;
    // calicoctl writes a Node's status; it is the node's to report, not the operator's.
    top.raw("status");
    let spec = top.raw("spec").unwrap_or(Value::Null);
    top.finish(&["apiVersion", "kind", "metadata", "spec"])
        .map_err(on_error)?;
    let spec = Fields::new("spec", spec).map_err(on_error)?;
    let resource = match kind {
        Kind::IPPool => read_pool(name.clone(), spec).map(Resource::IPPool),
        Kind::IPReservation => read_reservation(name.clone(), spec).map(Resource::IPReservation),
        Kind::Node => read_node(name.clone(), labels, spec).map(Resource::Node),
        Kind::BGPPeer => read_peer(name.clone(), spec).map(Resource::BGPPeer),
        Kind::BGPConfiguration => {
            read_bgp_configuration(name.clone(), spec).map(Resource::BGPConfiguration)
        }
        other => Err(Problem::new("kind", format!("{other} cannot be applied"))),
    }
    .map_err(on_error)?;
    check_resource(&resource)?;
    Ok(resource)
}

/// The rules a resource keeps on its own (not against the store), as a [`DocumentError`].
pub fn check_resource(resource: &Resource) -> Result<(), DocumentError> {
    let result = match resource {
        Resource::IPPool(pool) => validate_pool(pool).map_err(ClusterError::from),
        Resource::IPReservation(reservation) => {
            validate_name(Kind::IPReservation, &reservation.name)
        }
        Resource::Node(node) => validate_node(node),
        Resource::BGPPeer(peer) => validate_bgp_peer(peer),
        Resource::BGPConfiguration(config) => validate_bgp_configuration(config),
        _ => Ok(()),
    };
    result.map_err(|error| document_error(resource.kind(), &resource.name(), error))
}

/// A validation error in document terms: the field as the document spells it.
pub fn document_error(kind: Kind, name: &str, error: ClusterError) -> DocumentError {
    let (field, problem) = match error {
        ClusterError::Invalid { field, problem, .. } => (field, problem),
        ClusterError::Ipam(IpamError::InvalidPool { field, problem, .. }) => (
            if field == "name" {
                "metadata.name".to_string()
            } else {
                format!("spec.{field}")
            },
            problem,
        ),
        other => ("".to_string(), other.to_string()),
    };
    DocumentError {
        kind: Some(kind.as_str().to_string()),
        name: Some(name.to_string()),
        field,
        problem,
    }
}

fn read_labels(metadata: &mut Fields) -> Result<BTreeMap<String, String>, Problem> {
    let Some(mut labels) = metadata.nested("labels")? else {
        return Ok(BTreeMap::new());
    };
    let mut read = BTreeMap::new();
    for (key, value) in std::mem::take(&mut labels.members) {
        // Label values are text; YAML reads `rack: 1` as a number, which means "1".
        let text = scalar_text(&value).ok_or_else(|| {
            Problem::new(
                labels.field(&key),
                format!("expected text, found {}", what(&value)),
            )
        })?;
        read.insert(key, text);
    }
    Ok(read)
}

fn read_pool(name: String, mut spec: Fields) -> Result<IPPool, Problem> {
    let cidr = spec
        .parse("cidr", |text| {
            text.trim().parse::<IpNet>().map_err(|_| {
                format!("\"{text}\" is not a CIDR; valid forms: 198.18.0.0/16, 2001:db8::/48")
            })
        })?
        .ok_or_else(|| Problem::new("spec.cidr", "missing; e.g. 198.18.0.0/16"))?;
    let mut pool = IPPool::new(name, cidr);
    pool.block_size = match spec.take::<u8>(
        "blockSize",
        "a prefix length (20–32 for IPv4, 116–128 for IPv6)",
    )? {
        Some(size) => size,
        None => match cidr {
            IpNet::V4(_) => DEFAULT_BLOCK_SIZE_V4,
            IpNet::V6(_) => DEFAULT_BLOCK_SIZE_V6,
        },
    };
    if let Some(mode) = spec.parse("ipipMode", parse_encapsulation)? {
        pool.ipip_mode = mode;
    }
    if let Some(mode) = spec.parse("vxlanMode", parse_encapsulation)? {
        pool.vxlan_mode = mode;
    }
    pool.nat_outgoing = spec.boolean("natOutgoing")?.unwrap_or(false);
    pool.disabled = spec.boolean("disabled")?.unwrap_or(false);
    pool.disable_bgp_export = spec.boolean("disableBGPExport")?.unwrap_or(false);
    if let Some(selector) = spec.text("nodeSelector")? {
        pool.node_selector = selector;
    }
    if let Some(uses) =
        spec.take::<Vec<AllowedUse>>("allowedUses", "a list of Workload and/or Tunnel")?
    {
        pool.allowed_uses = uses;
    }
    spec.finish(&[
        "cidr",
        "blockSize",
        "ipipMode",
        "vxlanMode",
        "natOutgoing",
        "disabled",
        "disableBGPExport",
        "nodeSelector",
        "allowedUses",
    ])?;
    Ok(pool)
}

fn read_reservation(name: String, mut spec: Fields) -> Result<IPReservation, Problem> {
    let texts = spec
        .take::<Vec<Value>>("reservedCIDRs", "a list of CIDRs or addresses")?
        .ok_or_else(|| {
            Problem::new(
                "spec.reservedCIDRs",
                "missing; e.g. [198.18.0.0/30, 198.18.0.10]",
            )
        })?;
    let mut reserved_cidrs = Vec::with_capacity(texts.len());
    for (index, value) in texts.into_iter().enumerate() {
        let field = format!("spec.reservedCIDRs[{index}]");
        let text = scalar_text(&value)
            .ok_or_else(|| Problem::new(&field, "expected a CIDR or address"))?;
        reserved_cidrs
            .push(parse_cidr_or_address(&text).map_err(|problem| Problem::new(&field, problem))?);
    }
    if reserved_cidrs.is_empty() {
        return Err(Problem::new(
            "spec.reservedCIDRs",
            "is empty; list at least one CIDR or address",
        ));
    }
    spec.finish(&["reservedCIDRs"])?;
    Ok(IPReservation {
        name,
        reserved_cidrs,
    })
}

fn read_node(
    name: String,
    labels: BTreeMap<String, String>,
    mut spec: Fields,
) -> Result<Node, Problem> {
    let bgp = match spec.nested("bgp")? {
        None => None,
        Some(mut bgp) => {
            let read = NodeBGPSpec {
                ipv4_address: bgp.parse("ipv4Address", parse_address_with_prefix_v4)?,
                ipv6_address: bgp.parse("ipv6Address", parse_address_with_prefix_v6)?,
                as_number: bgp.as_number()?,
                route_reflector_cluster_id: bgp.parse("routeReflectorClusterID", parse_v4)?,
                ipv4_ipip_tunnel_addr: bgp.parse("ipv4IPIPTunnelAddr", parse_v4)?,
            };
            bgp.finish(&[
                "ipv4Address",
                "ipv6Address",
                "asNumber",
                "routeReflectorClusterID",
                "ipv4IPIPTunnelAddr",
            ])?;
            Some(read)
        }
    };
    let node = Node {
        name,
        labels,
        bgp,
        ipv4_vxlan_tunnel_addr: spec.parse("ipv4VXLANTunnelAddr", parse_v4)?,
        vxlan_tunnel_mac_addr: spec.text("vxlanTunnelMACAddr")?,
        ipv6_vxlan_tunnel_addr: spec.parse("ipv6VXLANTunnelAddr", parse_v6)?,
        vxlan_tunnel_mac_addr_v6: spec.text("vxlanTunnelMACAddrV6")?,
    };
    spec.finish(&[
        "bgp",
        "ipv4VXLANTunnelAddr",
        "vxlanTunnelMACAddr",
        "ipv6VXLANTunnelAddr",
        "vxlanTunnelMACAddrV6",
    ])?;
    Ok(node)
}

fn read_bgp_configuration(name: String, mut spec: Fields) -> Result<BGPConfiguration, Problem> {
    let config = BGPConfiguration {
        name,
        node_to_node_mesh_enabled: spec.boolean("nodeToNodeMeshEnabled")?,
        as_number: spec.as_number()?,
        listen_port: spec.parse("listenPort", parse_port)?,
        node_mesh_max_restart_time: spec.parse("nodeMeshMaxRestartTime", parse_duration)?,
        log_severity_screen: spec.text("logSeverityScreen")?,
    };
    spec.finish(&[
        "nodeToNodeMeshEnabled",
        "asNumber",
        "listenPort",
        "nodeMeshMaxRestartTime",
        "logSeverityScreen",
    ])?;
    Ok(config)
}

fn read_peer(name: String, mut spec: Fields) -> Result<BGPPeer, Problem> {
    let password = match spec.raw("password") {
        None => None,
        Some(Value::String(text)) => Some(text),
        Some(Value::Object(_)) => {
            return Err(Problem::new(
                "spec.password",
                "Calico's secretKeyRef is not supported: tortie's datastores hold no secrets yet; give the password as plain text (password: \"...\")",
            ));
        }
        Some(other) => {
            return Err(Problem::new(
                "spec.password",
                format!("expected text, found {}", what(&other)),
            ));
        }
    };
    let peer = BGPPeer {
        name,
        node: spec.text("node")?,
        node_selector: spec.text("nodeSelector")?,
        peer_ip: spec.text("peerIP")?,
        peer_selector: spec.text("peerSelector")?,
        as_number: spec.as_number()?,
        password,
        ttl_security: spec.take::<u8>("ttlSecurity", "a hop count, 1–255")?,
        max_restart_time: spec.parse("maxRestartTime", parse_duration)?,
        source_address: spec.parse("sourceAddress", |text| match text {
            "UseNodeIP" => Ok(SourceAddress::UseNodeIP),
            "None" => Ok(SourceAddress::None),
            other => Err(format!("\"{other}\"; valid: UseNodeIP, None")),
        })?,
        keep_original_next_hop: spec.boolean("keepOriginalNextHop")?.unwrap_or(false),
    };
    spec.finish(&[
        "node",
        "nodeSelector",
        "peerIP",
        "peerSelector",
        "asNumber",
        "password",
        "ttlSecurity",
        "maxRestartTime",
        "sourceAddress",
        "keepOriginalNextHop",
    ])?;
    Ok(peer)
}

/// A resource as a document (what `tortiectl get -o json|yaml` prints, and `apply` reads
/// back). Blocks and affinities, which are not applied, come out in the same shape.
pub fn write_document(resource: &Resource) -> Value {
    let value = match resource {
        Resource::IPPool(value) => serde_json::to_value(value),
        Resource::IPAMBlock(value) => serde_json::to_value(value),
        Resource::BlockAffinity(value) => serde_json::to_value(value),
        Resource::IPAMHandle(value) => serde_json::to_value(value),
        Resource::IPAMConfig(value) => serde_json::to_value(value),
        Resource::IPReservation(value) => serde_json::to_value(value),
        Resource::Node(value) => serde_json::to_value(value),
        Resource::BGPPeer(value) => serde_json::to_value(value),
        Resource::BGPConfiguration(value) => serde_json::to_value(value),
    };
    let mut spec = match value {
        Ok(Value::Object(spec)) => spec,
        // Serialising plain data into a Value does not fail; keep the name at least.
        _ => Map::new(),
    };
    spec.remove("name");
    let mut metadata = Map::new();
    metadata.insert("name".to_string(), Value::String(resource.name()));
    if let Resource::Node(_) = resource
        && let Some(labels) = spec.remove("labels")
    {
        metadata.insert("labels".to_string(), labels);
    }
    let mut document = Map::new();
    document.insert(
        "apiVersion".to_string(),
        Value::String(API_VERSION.to_string()),
    );
    document.insert(
        "kind".to_string(),
        Value::String(resource.kind().as_str().to_string()),
    );
    document.insert("metadata".to_string(), Value::Object(metadata));
    document.insert("spec".to_string(), Value::Object(spec));
    Value::Object(document)
}

/// Several resources of one kind as calicoctl lists them: `kind: <Kind>List`, `items`.
pub fn write_list(kind: Kind, resources: &[Resource]) -> Value {
    let mut document = Map::new();
    document.insert(
        "apiVersion".to_string(),
        Value::String(API_VERSION.to_string()),
    );
    document.insert("kind".to_string(), Value::String(format!("{kind}List")));
    document.insert(
        "items".to_string(),
        Value::Array(resources.iter().map(write_document).collect()),
    );
    Value::Object(document)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn document(kind: &str, name: &str, spec: Value) -> Value {
        json!({
            "apiVersion": "projectcalico.org/v3",
            "kind": kind,
            "metadata": {"name": name},
            "spec": spec,
        })
    }

    fn one(value: Value) -> Resource {
        let mut read = read_document(value).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read.len(), 1);
        read.remove(0)
    }

    /// The field a bad document is refused for, and the whole message.
    fn refused(value: Value) -> (String, String) {
        let error = read_document(value).unwrap_err();
        (error.field.clone(), error.to_string())
    }

    #[test]
    fn calico_documents_read_as_resources() {
        let Resource::BGPPeer(peer) = one(document(
            "BGPPeer",
            "tor-1",
            json!({
                "peerIP": "192.0.2.1:1790",
                "asNumber": 64513,
                "node": "node-a",
                "password": "s3cret",
                "ttlSecurity": 1,
                "maxRestartTime": "2m",
                "sourceAddress": "None",
                "keepOriginalNextHop": true,
            }),
        )) else {
            panic!("not a peer")
        };
        assert_eq!(peer.name, "tor-1");
        assert_eq!(peer.peer_ip.as_deref(), Some("192.0.2.1:1790"));
        assert_eq!(peer.as_number, Some(64513));
        assert_eq!(peer.node.as_deref(), Some("node-a"));
        assert_eq!(peer.ttl_security, Some(1));
        assert_eq!(
            peer.max_restart_time,
            Some(std::time::Duration::from_secs(120))
        );
        assert_eq!(peer.source_address, Some(SourceAddress::None));
        assert!(peer.keep_original_next_hop);

        let Resource::Node(node) = one(json!({
            "apiVersion": "tortie.dev/v1",
            "kind": "Node",
            "metadata": {"name": "node-a", "labels": {"rack": 1, "route-reflector": "true"},
                         "resourceVersion": "12", "uid": "x"},
            "spec": {"bgp": {"ipv4Address": "198.51.100.10/24", "asNumber": "1.10",
                             "routeReflectorClusterID": "224.0.0.1"},
                     "vxlanTunnelMACAddr": "66:0a:1b:2c:3d:4e"},
            "status": {"podCIDRs": []},
        })) else {
            panic!("not a node")
        };
        assert_eq!(node.labels["rack"], "1");
        let bgp = node.bgp.unwrap();
        assert_eq!(bgp.ipv4_address.unwrap().to_string(), "198.51.100.10/24");
        assert_eq!(bgp.as_number, Some(65546), "asdot 1.10");

        let Resource::BGPConfiguration(config) = one(document(
            "BGPConfiguration",
            "default",
            json!({"nodeToNodeMeshEnabled": false, "asNumber": 65000, "listenPort": 1790,
                   "nodeMeshMaxRestartTime": "300s", "logSeverityScreen": "Info"}),
        )) else {
            panic!("not a configuration")
        };
        assert!(!config.node_to_node_mesh_enabled());
        assert_eq!(config.listen_port(), 1790);

        let Resource::IPPool(pool) = one(document(
            "IPPool",
            "pods",
            json!({"cidr": "198.18.0.0/16", "ipipMode": "CrossSubnet", "natOutgoing": true,
                   "nodeSelector": "all()"}),
        )) else {
            panic!("not a pool")
        };
        assert_eq!(pool.block_size, 26);
        assert_eq!(pool.ipip_mode, EncapsulationMode::CrossSubnet);

        let Resource::IPReservation(reservation) = one(document(
            "IPReservation",
            "gateways",
            json!({"reservedCIDRs": ["198.18.0.0/30", "198.18.0.10"]}),
        )) else {
            panic!("not a reservation")
        };
        assert_eq!(reservation.reserved_cidrs[1].to_string(), "198.18.0.10/32");

        let rr = one(document(
            "BGPPeer",
            "to-rr",
            json!({"nodeSelector": "!has(route-reflector)",
                   "peerSelector": "route-reflector == 'true'"}),
        ));
        assert_eq!(rr.kind(), Kind::BGPPeer);
    }

    #[test]
    fn bad_documents_name_their_field() {
        let cases = [
            (
                json!({"kind": "BGPPeer", "metadata": {"name": "p"}}),
                "apiVersion",
            ),
            (json!({"apiVersion": "v1", "kind": "BGPPeer"}), "apiVersion"),
            (
                json!({"apiVersion": "tortie.dev/v1", "kind": "Pod", "metadata": {"name": "p"}}),
                "kind",
            ),
            (
                json!({"apiVersion": "tortie.dev/v1", "kind": "IPAMBlock", "metadata": {"name": "p"}}),
                "kind",
            ),
            (
                json!({"apiVersion": "tortie.dev/v1", "kind": "BGPPeer", "spec": {}}),
                "metadata",
            ),
            (
                json!({"apiVersion": "tortie.dev/v1", "kind": "BGPPeer", "metadata": {}}),
                "metadata.name",
            ),
            (
                json!({"apiVersion": "tortie.dev/v1", "kind": "BGPPeer", "metadata": {"name": "p"}, "specs": {}}),
                "specs",
            ),
            (
                document(
                    "BGPPeer",
                    "Tor_1",
                    json!({"peerIP": "192.0.2.1", "asNumber": 1}),
                ),
                "metadata.name",
            ),
            (
                document(
                    "BGPPeer",
                    "p",
                    json!({"peerIP": "192.0.2.256", "asNumber": 1}),
                ),
                "spec.peerIP",
            ),
            (
                document("BGPPeer", "p", json!({"peerIP": "192.0.2.1"})),
                "spec.asNumber",
            ),
            (
                document(
                    "BGPPeer",
                    "p",
                    json!({"peerIP": "192.0.2.1", "asNumber": "big"}),
                ),
                "spec.asNumber",
            ),
            (
                document(
                    "BGPPeer",
                    "p",
                    json!({"peerIP": "192.0.2.1", "asNumber": 1, "peerIp": "x"}),
                ),
                "spec.peerIp",
            ),
            (
                document(
                    "BGPPeer",
                    "p",
                    json!({"peerIP": "192.0.2.1", "asNumber": 1, "ttlSecurity": 300}),
                ),
                "spec.ttlSecurity",
            ),
            (
                document(
                    "BGPPeer",
                    "p",
                    json!({"peerIP": "192.0.2.1", "asNumber": 1, "maxRestartTime": "soon"}),
                ),
                "spec.maxRestartTime",
            ),
            (
                document(
                    "BGPPeer",
                    "p",
                    json!({"peerIP": "192.0.2.1", "asNumber": 1,
                "password": {"secretKeyRef": {"name": "s", "key": "k"}}}),
                ),
                "spec.password",
            ),
            (
                document(
                    "BGPPeer",
                    "p",
                    json!({"peerSelector": "a ==", "nodeSelector": "all()"}),
                ),
                "spec.peerSelector",
            ),
            (
                document(
                    "BGPPeer",
                    "p",
                    json!({"peerIP": "192.0.2.1", "asNumber": 1, "sourceAddress": "Mine"}),
                ),
                "spec.sourceAddress",
            ),
            (
                json!({"apiVersion": "tortie.dev/v1", "kind": "BGPPeer",
                    "metadata": {"name": "p", "labels": {"a": "b"}},
                    "spec": {"peerIP": "192.0.2.1", "asNumber": 1}}),
                "metadata.labels",
            ),
            (
                document(
                    "Node",
                    "n",
                    json!({"bgp": {"ipv4Address": "198.51.100.300/24"}}),
                ),
                "spec.bgp.ipv4Address",
            ),
            (
                document("Node", "n", json!({"bgp": {"asNumber": 0}})),
                "spec.bgp.asNumber",
            ),
            (
                document("Node", "n", json!({"bgp": {"asNumber": 1.1}})),
                "spec.bgp.asNumber",
            ),
            (
                document("Node", "n", json!({"bgp": {"asNumber": -5}})),
                "spec.bgp.asNumber",
            ),
            (
                document(
                    "BGPConfiguration",
                    "default",
                    json!({"asNumber": 4_294_967_296u64}),
                ),
                "spec.asNumber",
            ),
            (
                document(
                    "Node",
                    "n",
                    json!({"bgp": {"ipv4Adress": "198.51.100.3/24"}}),
                ),
                "spec.bgp.ipv4Adress",
            ),
            (
                document("Node", "n", json!({"vxlanTunnelMACAddr": "66:0a"})),
                "spec.vxlanTunnelMACAddr",
            ),
            (document("Node", "n", json!({"bgp": "yes"})), "spec.bgp"),
            (
                document("BGPConfiguration", "default", json!({"listenPort": 70000})),
                "spec.listenPort",
            ),
            (
                document(
                    "BGPConfiguration",
                    "default",
                    json!({"nodeToNodeMeshEnabled": "maybe"}),
                ),
                "spec.nodeToNodeMeshEnabled",
            ),
            (
                document(
                    "BGPConfiguration",
                    "default",
                    json!({"serviceClusterIPs": []}),
                ),
                "spec.serviceClusterIPs",
            ),
            (
                document("BGPConfiguration", "cluster", json!({})),
                "metadata.name",
            ),
            (
                document("IPPool", "p", json!({"cidr": "198.18.0.1/16"})),
                "spec.cidr",
            ),
            (document("IPPool", "p", json!({})), "spec.cidr"),
            (
                document(
                    "IPPool",
                    "p",
                    json!({"cidr": "198.18.0.0/16", "blockSize": 33}),
                ),
                "spec.blockSize",
            ),
            (
                document(
                    "IPPool",
                    "p",
                    json!({"cidr": "198.18.0.0/16", "ipipMode": "Sometimes"}),
                ),
                "spec.ipipMode",
            ),
            (
                document(
                    "IPPool",
                    "p",
                    json!({"cidr": "198.18.0.0/16", "nodeSelector": "a in {"}),
                ),
                "spec.nodeSelector",
            ),
            (
                document("IPReservation", "r", json!({"reservedCIDRs": ["nowhere"]})),
                "spec.reservedCIDRs[0]",
            ),
            (
                json!({"apiVersion": "tortie.dev/v1", "kind": "BGPPeerList",
                    "items": [document("BGPPeer", "p", json!({"peerIP": "x", "asNumber": 1}))]}),
                "items[0].spec.peerIP",
            ),
        ];
        for (value, field) in cases {
            let (found, message) = refused(value.clone());
            assert_eq!(found, field, "{value}: {message}");
            assert!(message.contains(field), "{message}");
        }
        // Messages say what is valid.
        let (_, message) = refused(document(
            "BGPPeer",
            "p",
            json!({"peerIP": "x", "asNumber": 1}),
        ));
        assert!(
            message.starts_with("BGPPeer p: spec.peerIP:") && message.contains("valid forms"),
            "{message}"
        );
        let (_, message) = refused(document("BGPPeer", "p", json!({"peerIp": "x"})));
        assert!(
            message.contains("valid fields here: node, nodeSelector, peerIP"),
            "{message}"
        );
        let (_, message) = refused(document(
            "IPPool",
            "p",
            json!({"cidr": "198.18.0.0/16", "ipipMode": "Sometimes"}),
        ));
        assert!(message.contains("Never, Always, CrossSubnet"), "{message}");
    }

    #[test]
    fn written_documents_read_back_unchanged() {
        let resources = [
            one(document(
                "BGPPeer",
                "tor-1",
                json!({"peerIP": "192.0.2.1", "asNumber": 64513,
                "maxRestartTime": "90s", "password": "pw"}),
            )),
            one(document(
                "Node",
                "node-a",
                json!({"bgp": {"ipv4Address": "198.51.100.10/24",
                "ipv6Address": "2001:db8::10/64"}, "ipv4VXLANTunnelAddr": "198.18.1.1"}),
            )),
            one(document(
                "BGPConfiguration",
                "default",
                json!({"nodeMeshMaxRestartTime": "1500ms"}),
            )),
            one(document(
                "IPPool",
                "pods",
                json!({"cidr": "2001:db8:1::/64", "vxlanMode": "Always",
                "allowedUses": ["Workload"]}),
            )),
            one(document(
                "IPReservation",
                "gw",
                json!({"reservedCIDRs": ["198.18.0.1"]}),
            )),
        ];
        for resource in &resources {
            let written = write_document(resource);
            assert_eq!(written["apiVersion"], API_VERSION);
            assert_eq!(one(written), *resource);
        }
        let list = write_list(Kind::BGPPeer, &resources[..1]);
        assert_eq!(list["kind"], "BGPPeerList");
        assert_eq!(read_document(list).unwrap(), resources[..1].to_vec());
        let node = write_document(&resources[1]);
        assert_eq!(node["spec"]["bgp"]["ipv4Address"], "198.51.100.10/24");
        assert!(node["metadata"].get("labels").is_none());
        assert_eq!(
            identify_document(node).unwrap(),
            vec![(Kind::Node, "node-a".to_string())]
        );
    }
}
