//! The IPAM resources, with Calico's kind and field names so that a Calico user reads them
//! without a dictionary. The block itself, which carries the allocation logic, is in
//! [`crate::block`].

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::block::IPAMBlock;
use crate::cluster::{BGPConfiguration, BGPPeer, Node};
use crate::name::Name;

/// Default block prefix length for IPv4 pools (a /26: 64 addresses).
pub const DEFAULT_BLOCK_SIZE_V4: u8 = 26;
/// Default block prefix length for IPv6 pools (a /122: 64 addresses).
pub const DEFAULT_BLOCK_SIZE_V6: u8 = 122;
/// Calico's accepted block sizes: 20–32 for IPv4, 116–128 for IPv6.
pub const BLOCK_SIZE_RANGE_V4: (u8, u8) = (20, 32);
pub const BLOCK_SIZE_RANGE_V6: (u8, u8) = (116, 128);
/// Default `maxBlocksPerHost` (NOTES.md: Calico's figure is 20).
pub const DEFAULT_MAX_BLOCKS_PER_HOST: u32 = 20;

/// The name of the one IPAMConfig object.
pub const IPAM_CONFIG_NAME: &str = "default";

/// How traffic to a pool's addresses on other nodes is encapsulated (`ipipMode`, `vxlanMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum EncapsulationMode {
    #[default]
    Never,
    Always,
    CrossSubnet,
}

impl fmt::Display for EncapsulationMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EncapsulationMode::Never => "Never",
            EncapsulationMode::Always => "Always",
            EncapsulationMode::CrossSubnet => "CrossSubnet",
        })
    }
}

impl std::str::FromStr for EncapsulationMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "Never" => Ok(EncapsulationMode::Never),
            "Always" => Ok(EncapsulationMode::Always),
            "CrossSubnet" => Ok(EncapsulationMode::CrossSubnet),
            other => Err(format!(
                "\"{other}\" is not an encapsulation mode; valid: Never, Always, CrossSubnet"
            )),
        }
    }
}

/// What a pool's addresses may be used for (`allowedUses`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AllowedUse {
    /// Pod (workload) addresses.
    Workload,
    /// A node's IPIP or VXLAN tunnel address.
    Tunnel,
}

impl fmt::Display for AllowedUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AllowedUse::Workload => "Workload",
            AllowedUse::Tunnel => "Tunnel",
        })
    }
}

fn default_allowed_uses() -> Vec<AllowedUse> {
    vec![AllowedUse::Workload, AllowedUse::Tunnel]
}

fn default_node_selector() -> String {
    "all()".to_string()
}

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(address: IpAddr) -> Family {
        match address {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    pub fn of_net(net: &IpNet) -> Family {
        match net {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// A range of addresses pods (and tunnels) get theirs from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IPPool {
    pub name: String,
    pub cidr: IpNet,
    /// Prefix length of the blocks the pool is cut into.
    pub block_size: u8,
    #[serde(default)]
    pub ipip_mode: EncapsulationMode,
    #[serde(default)]
    pub vxlan_mode: EncapsulationMode,
    #[serde(default)]
    pub nat_outgoing: bool,
    #[serde(default)]
    pub disabled: bool,
    #[serde(default, rename = "disableBGPExport")]
    pub disable_bgp_export: bool,
    /// Which nodes may take blocks from this pool, in Calico's selector syntax.
    #[serde(default = "default_node_selector")]
    pub node_selector: String,
    #[serde(default = "default_allowed_uses")]
    pub allowed_uses: Vec<AllowedUse>,
}

impl IPPool {
    /// A pool with Calico's defaults for everything but its name and CIDR.
    pub fn new(name: impl Into<String>, cidr: IpNet) -> IPPool {
        let block_size = match cidr {
            IpNet::V4(_) => DEFAULT_BLOCK_SIZE_V4,
            IpNet::V6(_) => DEFAULT_BLOCK_SIZE_V6,
        };
        IPPool {
            name: name.into(),
            cidr,
            block_size,
            ipip_mode: EncapsulationMode::Never,
            vxlan_mode: EncapsulationMode::Never,
            nat_outgoing: false,
            disabled: false,
            disable_bgp_export: false,
            node_selector: default_node_selector(),
            allowed_uses: default_allowed_uses(),
        }
    }

    pub fn family(&self) -> Family {
        Family::of_net(&self.cidr)
    }

    /// How many blocks the pool is cut into (saturating: an IPv6 pool can hold more than
    /// `u128` can count only in theory, since prefixes are at most 128 bits).
    pub fn block_count(&self) -> u128 {
        let bits = u32::from(self.block_size.saturating_sub(self.cidr.prefix_len()));
        1u128.checked_shl(bits).unwrap_or(u128::MAX)
    }

    /// The `index`-th block of the pool.
    pub fn block_at(&self, index: u128) -> IpNet {
        let host_bits = u32::from(self.cidr.max_prefix_len() - self.block_size);
        let offset = index.checked_shl(host_bits).unwrap_or(0);
        let base = crate::block::address_to_u128(self.cidr.network());
        let address = crate::block::u128_to_address(Family::of_net(&self.cidr), base + offset);
        // The prefix length is within range by the pool's validation.
        IpNet::new(address, self.block_size).unwrap_or(self.cidr)
    }

    /// The block of this pool that holds `address` (which must be inside the pool).
    pub fn block_for(&self, address: IpAddr) -> IpNet {
        IpNet::new(address, self.block_size)
            .map(|net| net.trunc())
            .unwrap_or(self.cidr)
    }

    pub fn allows(&self, intended: AllowedUse) -> bool {
        self.allowed_uses.contains(&intended)
    }
}

/// The state of a node's claim on a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AffinityState {
    /// Claim in progress: the block may not exist yet.
    Pending,
    /// The node owns the block.
    Confirmed,
    /// The node is giving the block up; nothing new is allocated from it.
    PendingDeletion,
}

impl fmt::Display for AffinityState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AffinityState::Pending => "pending",
            AffinityState::Confirmed => "confirmed",
            AffinityState::PendingDeletion => "pendingDeletion",
        })
    }
}

/// A node's claim on a block. Created (pending) before the block, confirmed after it, and
/// deleted after it, so a crash at any point leaves something [`crate::Ipam::gc`] can finish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockAffinity {
    pub node: String,
    pub cidr: IpNet,
    pub state: AffinityState,
    /// Unix seconds of the last state change; GC's grace period counts from it.
    #[serde(default)]
    pub timestamp: u64,
}

impl BlockAffinity {
    /// The store name: `<block name>.<node>`. Block names contain no dot, so the first dot
    /// splits the two unambiguously whatever the node is called.
    pub fn name_for(node: &str, cidr: &IpNet) -> String {
        let block = BlockName::new(cidr);
        let mut name = String::with_capacity(block.len() + 1 + node.len());
        name.push_str(&block);
        name.push('.');
        name.push_str(node);
        name
    }

    pub fn name(&self) -> String {
        BlockAffinity::name_for(&self.node, &self.cidr)
    }
}

/// Everything allocated to one handle (one pod interface, or one node's tunnel), counted per
/// block, so that releasing the handle visits only those blocks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IPAMHandle {
    /// Shared with the allocations' attributes (see [`Name`]).
    #[serde(rename = "handleID")]
    pub handle_id: Name,
    /// Block name → number of addresses this handle holds there.
    pub block: HandleBlocks,
    #[serde(default)]
    pub deleted: bool,
    /// Unix seconds when the handle was created; GC's grace period counts from it.
    #[serde(default)]
    pub timestamp: u64,
}

impl IPAMHandle {
    pub fn total(&self) -> u64 {
        self.block.values().map(|&count| u64::from(count)).sum()
    }
}

/// An [`IPAMHandle`]'s count of addresses per block: in Calico's JSON a map from block name
/// to count, kept here as entries in block-name order. Nearly every handle counts one
/// block (a pod's address), so one entry is held inline, its name too ([`BlockName`]); a
/// `BTreeMap<String, u32>` made two allocations (a node with room for eleven, and the name)
/// on the path of every assignment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HandleBlocks(SmallVec<[(RecordedName, u32); 1]>);

/// A block name as a handle records it: inline for every name tortie writes, on the heap
/// for a longer one read from elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RecordedName {
    Inline(BlockName),
    Heap(String),
}

impl RecordedName {
    fn new(name: &str) -> RecordedName {
        match BlockName::from_text(name) {
            Some(inline) => RecordedName::Inline(inline),
            None => RecordedName::Heap(name.to_string()),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            RecordedName::Inline(name) => name.as_str(),
            RecordedName::Heap(name) => name,
        }
    }

    /// The name's bytes, which order as the name does (`str` orders byte by byte) and
    /// need no check that they are UTF-8 text.
    fn as_bytes(&self) -> &[u8] {
        match self {
            RecordedName::Inline(name) => name.as_bytes(),
            RecordedName::Heap(name) => name.as_bytes(),
        }
    }
}

impl HandleBlocks {
    pub fn new() -> HandleBlocks {
        HandleBlocks::default()
    }

    fn position(&self, block: &str) -> Result<usize, usize> {
        self.0
            .binary_search_by(|(name, _)| name.as_bytes().cmp(block.as_bytes()))
    }

    pub fn get(&self, block: &str) -> Option<&u32> {
        self.position(block).ok().map(|index| &self.0[index].1)
    }

    pub fn get_mut(&mut self, block: &str) -> Option<&mut u32> {
        self.position(block).ok().map(|index| &mut self.0[index].1)
    }

    /// Sets a block's count; returns the count it replaced.
    pub fn insert(&mut self, block: &str, count: u32) -> Option<u32> {
        match self.position(block) {
            Ok(index) => Some(std::mem::replace(&mut self.0[index].1, count)),
            Err(index) => {
                self.0.insert(index, (RecordedName::new(block), count));
                None
            }
        }
    }

    pub fn remove(&mut self, block: &str) -> Option<u32> {
        self.position(block)
            .ok()
            .map(|index| self.0.remove(index).1)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Block names, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(name, _)| name.as_str())
    }

    pub fn values(&self) -> impl Iterator<Item = &u32> {
        self.0.iter().map(|(_, count)| count)
    }

    /// (block name, count), in block-name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &u32)> {
        self.0.iter().map(|(name, count)| (name.as_str(), count))
    }
}

impl<'a> IntoIterator for &'a HandleBlocks {
    type Item = (&'a str, &'a u32);
    type IntoIter = HandleBlocksIter<'a>;

    fn into_iter(self) -> HandleBlocksIter<'a> {
        HandleBlocksIter(self.0.iter())
    }
}

/// (block name, count) of a [`HandleBlocks`], in block-name order.
pub struct HandleBlocksIter<'a>(std::slice::Iter<'a, (RecordedName, u32)>);

impl<'a> Iterator for HandleBlocksIter<'a> {
    type Item = (&'a str, &'a u32);

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|(name, count)| (name.as_str(), count))
    }
}

impl<N: AsRef<str>> FromIterator<(N, u32)> for HandleBlocks {
    fn from_iter<I: IntoIterator<Item = (N, u32)>>(entries: I) -> HandleBlocks {
        let mut blocks = HandleBlocks::new();
        for (name, count) in entries {
            blocks.insert(name.as_ref(), count);
        }
        blocks
    }
}

impl<N: AsRef<str>, const L: usize> From<[(N, u32); L]> for HandleBlocks {
    fn from(entries: [(N, u32); L]) -> HandleBlocks {
        entries.into_iter().collect()
    }
}

impl Serialize for HandleBlocks {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for HandleBlocks {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<HandleBlocks, D::Error> {
        BTreeMap::<String, u32>::deserialize(deserializer).map(|map| map.into_iter().collect())
    }
}

/// Cluster-wide IPAM settings: one object, named `default`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IPAMConfig {
    /// Never borrow from another node's block; a node uses only blocks it owns.
    #[serde(default)]
    pub strict_affinity: bool,
    /// Claim new blocks when the node's are full (otherwise only borrow).
    #[serde(default = "default_true")]
    pub auto_allocate_blocks: bool,
    /// Most blocks one node may own; 0 means no limit.
    #[serde(default = "default_max_blocks")]
    pub max_blocks_per_host: u32,
}

fn default_true() -> bool {
    true
}

fn default_max_blocks() -> u32 {
    DEFAULT_MAX_BLOCKS_PER_HOST
}

impl Default for IPAMConfig {
    fn default() -> Self {
        IPAMConfig {
            strict_affinity: false,
            auto_allocate_blocks: true,
            max_blocks_per_host: DEFAULT_MAX_BLOCKS_PER_HOST,
        }
    }
}

/// Addresses automatic assignment must never hand out (a gateway, a load balancer's VIP).
/// Explicit assignment of a reserved address is allowed: the operator asked for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IPReservation {
    pub name: String,
    #[serde(rename = "reservedCIDRs")]
    pub reserved_cidrs: Vec<IpNet>,
}

/// The kinds the store holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    IPPool,
    IPAMBlock,
    BlockAffinity,
    IPAMHandle,
    IPAMConfig,
    IPReservation,
    Node,
    BGPPeer,
    BGPConfiguration,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::IPPool,
        Kind::IPAMBlock,
        Kind::BlockAffinity,
        Kind::IPAMHandle,
        Kind::IPAMConfig,
        Kind::IPReservation,
        Kind::Node,
        Kind::BGPPeer,
        Kind::BGPConfiguration,
    ];

    /// How many kinds there are: the size of a per-kind table.
    pub const COUNT: usize = Kind::ALL.len();

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::IPPool => "IPPool",
            Kind::IPAMBlock => "IPAMBlock",
            Kind::BlockAffinity => "BlockAffinity",
            Kind::IPAMHandle => "IPAMHandle",
            Kind::IPAMConfig => "IPAMConfig",
            Kind::IPReservation => "IPReservation",
            Kind::Node => "Node",
            Kind::BGPPeer => "BGPPeer",
            Kind::BGPConfiguration => "BGPConfiguration",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn parse(text: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One stored object of any kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    IPPool(IPPool),
    IPAMBlock(IPAMBlock),
    BlockAffinity(BlockAffinity),
    IPAMHandle(IPAMHandle),
    IPAMConfig(IPAMConfig),
    IPReservation(IPReservation),
    Node(Node),
    BGPPeer(BGPPeer),
    BGPConfiguration(BGPConfiguration),
}

impl Resource {
    pub fn kind(&self) -> Kind {
        match self {
            Resource::IPPool(_) => Kind::IPPool,
            Resource::IPAMBlock(_) => Kind::IPAMBlock,
            Resource::BlockAffinity(_) => Kind::BlockAffinity,
            Resource::IPAMHandle(_) => Kind::IPAMHandle,
            Resource::IPAMConfig(_) => Kind::IPAMConfig,
            Resource::IPReservation(_) => Kind::IPReservation,
            Resource::Node(_) => Kind::Node,
            Resource::BGPPeer(_) => Kind::BGPPeer,
            Resource::BGPConfiguration(_) => Kind::BGPConfiguration,
        }
    }

    /// The object's name, unique within its kind.
    pub fn name(&self) -> String {
        match self {
            Resource::IPPool(pool) => pool.name.clone(),
            Resource::IPAMBlock(block) => block_name(&block.cidr),
            Resource::BlockAffinity(affinity) => affinity.name(),
            Resource::IPAMHandle(handle) => handle.handle_id.to_string(),
            Resource::IPAMConfig(_) => IPAM_CONFIG_NAME.to_string(),
            Resource::IPReservation(reservation) => reservation.name.clone(),
            Resource::Node(node) => node.name.clone(),
            Resource::BGPPeer(peer) => peer.name.clone(),
            Resource::BGPConfiguration(config) => config.name.clone(),
        }
    }

    /// The node an object belongs to, which stores index so that "this node's affinities"
    /// is one indexed read (etcd: a key prefix; Kubernetes: a label selector).
    pub fn node(&self) -> Option<&str> {
        match self {
            Resource::IPAMBlock(block) => block.affinity_node(),
            Resource::BlockAffinity(affinity) => Some(&affinity.node),
            _ => None,
        }
    }

    /// The object as JSON, the form every persistent backend stores.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        match self {
            Resource::IPPool(value) => serde_json::to_string(value),
            Resource::IPAMBlock(value) => serde_json::to_string(value),
            Resource::BlockAffinity(value) => serde_json::to_string(value),
            Resource::IPAMHandle(value) => serde_json::to_string(value),
            Resource::IPAMConfig(value) => serde_json::to_string(value),
            Resource::IPReservation(value) => serde_json::to_string(value),
            Resource::Node(value) => serde_json::to_string(value),
            Resource::BGPPeer(value) => serde_json::to_string(value),
            Resource::BGPConfiguration(value) => serde_json::to_string(value),
        }
    }

    pub fn from_json(kind: Kind, text: &str) -> Result<Resource, serde_json::Error> {
        Ok(match kind {
            Kind::IPPool => Resource::IPPool(serde_json::from_str(text)?),
            Kind::IPAMBlock => Resource::IPAMBlock(serde_json::from_str(text)?),
            Kind::BlockAffinity => Resource::BlockAffinity(serde_json::from_str(text)?),
            Kind::IPAMHandle => Resource::IPAMHandle(serde_json::from_str(text)?),
            Kind::IPAMConfig => Resource::IPAMConfig(serde_json::from_str(text)?),
            Kind::IPReservation => Resource::IPReservation(serde_json::from_str(text)?),
            Kind::Node => Resource::Node(serde_json::from_str(text)?),
            Kind::BGPPeer => Resource::BGPPeer(serde_json::from_str(text)?),
            Kind::BGPConfiguration => Resource::BGPConfiguration(serde_json::from_str(text)?),
        })
    }
}

/// A block's store name, Calico-style: the CIDR with `.`, `:` and `/` turned into `-`
/// (`198-18-0-0-26`), which is a valid Kubernetes object name and an etcd key segment.
pub fn block_name(cidr: &IpNet) -> String {
    BlockName::new(cidr).as_str().to_string()
}

/// [`block_name`] held inline, for the assignment path, which names a block on every call:
/// no allocation, and an IPv4 name written digit by digit (through `Display` for the
/// address and then each octet, the name cost more than the store lookup it was for).
/// The longest name, a full IPv6 address with its prefix, is 43 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockName {
    length: u8,
    bytes: [u8; BLOCK_NAME_CAPACITY],
}

const BLOCK_NAME_CAPACITY: usize = 48;

impl BlockName {
    pub fn new(cidr: &IpNet) -> BlockName {
        let mut name = BlockName {
            length: 0,
            bytes: [0; BLOCK_NAME_CAPACITY],
        };
        match cidr {
            IpNet::V4(net) => {
                // At most 18 bytes (`255-255-255-255-32`), well within the buffer: each
                // number and the dash after it is one four-byte copy from a table.
                let bytes = &mut name.bytes;
                let mut at = 0;
                for octet in net.addr().octets() {
                    let (text, length) = DECIMAL_AND_DASH[usize::from(octet)];
                    bytes[at..at + 4].copy_from_slice(&text);
                    at += usize::from(length) + 1;
                }
                let (text, length) = DECIMAL_AND_DASH[usize::from(net.prefix_len())];
                bytes[at..at + 4].copy_from_slice(&text);
                name.length = (at + usize::from(length)) as u8;
            }
            IpNet::V6(_) => {
                use std::fmt::Write;
                // Writing cannot fail: the name always fits (see above).
                let _ = write!(name, "{cidr}");
            }
        }
        name
    }

    /// A name read from elsewhere, if it fits.
    pub fn from_text(text: &str) -> Option<BlockName> {
        let mut name = BlockName {
            length: 0,
            bytes: [0; BLOCK_NAME_CAPACITY],
        };
        let room = name.bytes.get_mut(..text.len())?;
        room.copy_from_slice(text.as_bytes());
        name.length = text.len() as u8;
        Some(name)
    }

    pub fn as_str(&self) -> &str {
        debug_assert!(std::str::from_utf8(self.as_bytes()).is_ok());
        // SAFETY: every byte up to `length` is valid UTF-8: `new` writes ASCII digits and
        // dashes (or goes through `write_str`), `from_text` copies a whole `&str`, and
        // `write_str`, the only caller of `push`, checks for room before writing anything
        // and copies its text byte for byte, turning only ASCII separators into ASCII
        // dashes, so no character is ever cut. (Checking it again here, on every call,
        // cost as much as writing the name.)
        unsafe { std::str::from_utf8_unchecked(self.as_bytes()) }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.length)]
    }

    fn push(&mut self, byte: u8) {
        if let Some(slot) = self.bytes.get_mut(usize::from(self.length)) {
            *slot = byte;
            self.length += 1;
        }
    }
}

/// Each byte value in decimal followed by a dash, padded to four bytes, with the number
/// of digits: how [`BlockName::new`] writes an IPv4 name.
const DECIMAL_AND_DASH: [([u8; 4], u8); 256] = {
    let mut table = [([0u8; 4], 0u8); 256];
    let mut value = 0;
    while value < 256 {
        let (hundreds, tens, units) = (value / 100, value / 10 % 10, value % 10);
        table[value] = if value >= 100 {
            (
                [
                    b'0' + hundreds as u8,
                    b'0' + tens as u8,
                    b'0' + units as u8,
                    b'-',
                ],
                3,
            )
        } else if value >= 10 {
            ([b'0' + tens as u8, b'0' + units as u8, b'-', 0], 2)
        } else {
            ([b'0' + units as u8, b'-', 0, 0], 1)
        };
        value += 1;
    }
    table
};

impl fmt::Write for BlockName {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        if usize::from(self.length) + text.len() > BLOCK_NAME_CAPACITY {
            return Err(fmt::Error);
        }
        for byte in text.bytes() {
            self.push(match byte {
                b'.' | b':' | b'/' => b'-',
                other => other,
            });
        }
        Ok(())
    }
}

impl std::ops::Deref for BlockName {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

/// The `affinity` value of a block owned by `node`.
pub fn host_affinity(node: &str) -> String {
    let mut affinity = String::with_capacity(5 + node.len());
    affinity.push_str("host:");
    affinity.push_str(node);
    affinity
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The name as it was first defined: `Display` of the CIDR, separators turned to dashes.
    fn by_display(cidr: &IpNet) -> String {
        cidr.to_string()
            .chars()
            .map(|c| if matches!(c, '.' | ':' | '/') { '-' } else { c })
            .collect()
    }

    #[test]
    fn block_names_are_the_display_form_with_dashes() {
        for text in [
            "198.18.0.0/26",
            "0.0.0.0/32",
            "255.255.255.192/26",
            "10.1.20.100/30",
            "2001:db8::/122",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff80/128",
            "::ffff:198.51.100.0/120",
            "fd00:1:2:3::40/122",
        ] {
            let cidr: IpNet = text.parse().unwrap();
            assert_eq!(block_name(&cidr), by_display(&cidr), "{text}");
            assert_eq!(&*BlockName::new(&cidr), by_display(&cidr), "{text}");
        }
        assert_eq!(
            block_name(&"198.18.0.0/26".parse().unwrap()),
            "198-18-0-0-26"
        );
        assert_eq!(
            BlockAffinity::name_for("node-a", &"198.18.0.64/26".parse().unwrap()),
            "198-18-0-64-26.node-a"
        );
    }

    #[test]
    fn handle_blocks_keep_name_order_and_read_as_a_map() {
        let long = "a-block-name-from-elsewhere-longer-than-any-tortie-writes";
        let mut blocks = HandleBlocks::new();
        assert!(blocks.is_empty());
        assert_eq!(blocks.insert("198-18-0-64-26", 1), None);
        assert_eq!(blocks.insert("198-18-0-0-26", 2), None);
        assert_eq!(blocks.insert(long, 3), None);
        assert_eq!(blocks.insert("198-18-0-0-26", 4), Some(2));
        *blocks.get_mut("198-18-0-64-26").unwrap() += 1;
        let expected = BTreeMap::from([
            ("198-18-0-0-26".to_string(), 4),
            ("198-18-0-64-26".to_string(), 2),
            (long.to_string(), 3),
        ]);
        let seen: BTreeMap<String, u32> = blocks
            .iter()
            .map(|(name, &count)| (name.to_string(), count))
            .collect();
        assert_eq!(seen, expected);
        assert!(blocks.keys().is_sorted());
        assert_eq!(blocks.len(), 3);
        assert_eq!(blocks.values().sum::<u32>(), 9);
        assert_eq!(
            serde_json::to_string(&blocks).unwrap(),
            serde_json::to_string(&expected).unwrap()
        );
        let back: HandleBlocks =
            serde_json::from_str(&serde_json::to_string(&expected).unwrap()).unwrap();
        assert_eq!(back, blocks);
        assert_eq!(blocks.remove(long), Some(3));
        assert_eq!(blocks.remove(long), None);
        assert_eq!(blocks.get(long), None);
        assert_eq!(blocks.get("198-18-0-0-26"), Some(&4));
    }
}
