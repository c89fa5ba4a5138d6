//! `IPAMBlock`: one block of a pool (a /26 by default) and the allocation rules inside it.
//! Pure logic: the store and the retries are elsewhere.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::model::{Family, host_affinity};
use crate::name::Name;
use crate::secondary::Secondary;

/// Secondary attribute keys (Calico's names).
pub const ATTRIBUTE_POD: &str = "pod";
pub const ATTRIBUTE_NAMESPACE: &str = "namespace";
pub const ATTRIBUTE_NODE: &str = "node";
pub const ATTRIBUTE_TYPE: &str = "type";
/// Unix seconds when the address was allocated; GC's grace period counts from it.
pub const ATTRIBUTE_TIMESTAMP: &str = "timestamp";

/// Who holds an allocation: the handle, and what it is for (pod, namespace, node, type).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AllocationAttribute {
    /// Shared with the handle object (see [`Name`]).
    #[serde(rename = "handle_id")]
    pub handle_id: Option<Name>,
    #[serde(default)]
    pub secondary: Secondary,
}

/// A block of a pool and who holds each of its addresses.
///
/// `allocations[i]` is the index into `attributes` of the holder of the block's `i`-th
/// address (its ordinal), or `None` when free. `unallocated` is a queue of the free
/// ordinals: allocation takes from the front and release appends at the back, so the
/// address freed longest ago is reused first (a reused address is the one most likely to
/// have left every cache and conntrack table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IPAMBlock {
    pub cidr: IpNet,
    /// `host:<node>` for the node that owns the block, absent for an unowned block.
    pub affinity: Option<String>,
    #[serde(default)]
    pub strict_affinity: bool,
    pub allocations: Vec<Option<u32>>,
    pub unallocated: VecDeque<u32>,
    /// Shared (`Arc`) so that copying a block before a compare-and-swap does not copy every
    /// holder's strings.
    pub attributes: Vec<Arc<AllocationAttribute>>,
    #[serde(default)]
    pub deleted: bool,
    /// Bumped on every allocation; the value at allocation time is kept per ordinal so a
    /// release can prove it is about this allocation and not a later reuse of the address.
    #[serde(default)]
    pub sequence_number: u64,
    /// Per ordinal; in JSON a map from ordinal to number, as in Calico. Held as a vector
    /// so that copying a block before a compare-and-swap is one flat copy.
    #[serde(default, with = "sequence_map")]
    pub sequence_number_for_allocation: Vec<Option<u64>>,
}

/// Why a release by address did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseRefusal {
    OutsideBlock,
    NotAllocated,
    /// The address is held, but under another sequence number: it was released and
    /// reallocated since the caller saw it.
    SequenceMismatch {
        expected: u64,
        actual: u64,
    },
    /// The address is held by another handle than the caller named.
    HandleMismatch {
        expected: String,
        actual: Option<String>,
    },
}

/// What a successful release by address freed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleasedAddress {
    pub address: IpAddr,
    pub handle_id: Option<String>,
    pub sequence: u64,
}

/// One allocation, as [`IPAMBlock::allocations_iter`] lists it.
#[derive(Debug, Clone, Copy)]
pub struct AllocationView<'a> {
    pub ordinal: u32,
    pub address: IpAddr,
    pub attribute: Option<&'a AllocationAttribute>,
    pub sequence: Option<u64>,
}

impl<'a> AllocationView<'a> {
    pub fn handle_id(&self) -> Option<&'a str> {
        self.attribute
            .and_then(|attribute| attribute.handle_id.as_deref())
    }

    pub fn secondary(&self, key: &str) -> Option<&'a str> {
        self.attribute
            .and_then(|attribute| attribute.secondary.get(key))
    }
}

impl IPAMBlock {
    /// An empty block, owned by `node` if given.
    pub fn new(cidr: IpNet, node: Option<&str>, strict_affinity: bool) -> IPAMBlock {
        let cidr = cidr.trunc();
        let size = block_size_of(&cidr);
        IPAMBlock {
            cidr,
            affinity: node.map(host_affinity),
            strict_affinity,
            allocations: vec![None; size as usize],
            unallocated: (0..size).collect(),
            attributes: Vec::new(),
            deleted: false,
            sequence_number: 0,
            sequence_number_for_allocation: vec![None; size as usize],
        }
    }

    /// The number of addresses in the block.
    pub fn size(&self) -> u32 {
        self.allocations.len() as u32
    }

    /// The node named by `affinity: host:<node>`.
    pub fn affinity_node(&self) -> Option<&str> {
        self.affinity
            .as_deref()
            .and_then(|affinity| affinity.strip_prefix("host:"))
    }

    pub fn family(&self) -> Family {
        Family::of_net(&self.cidr)
    }

    pub fn address(&self, ordinal: u32) -> IpAddr {
        let base = address_to_u128(self.cidr.network());
        u128_to_address(self.family(), base + u128::from(ordinal))
    }

    pub fn ordinal(&self, address: IpAddr) -> Option<u32> {
        if !self.cidr.contains(&address) {
            return None;
        }
        let offset = address_to_u128(address) - address_to_u128(self.cidr.network());
        u32::try_from(offset).ok().filter(|&o| o < self.size())
    }

    pub fn in_use(&self) -> u32 {
        self.allocations.iter().filter(|a| a.is_some()).count() as u32
    }

    pub fn free(&self) -> u32 {
        self.size() - self.in_use()
    }

    pub fn is_empty(&self) -> bool {
        self.allocations.iter().all(Option::is_none)
    }

    /// Free addresses automatic assignment may take (those `reserved` rejects are skipped).
    pub fn assignable(&self, reserved: &dyn Fn(IpAddr) -> bool) -> u32 {
        self.unallocated
            .iter()
            .filter(|&&ordinal| !reserved(self.address(ordinal)))
            .count() as u32
    }

    /// Takes up to `count` free addresses, oldest-freed first, skipping reserved ones (which
    /// keep their place in the queue). Returns each address with its sequence number.
    pub fn assign(
        &mut self,
        count: u32,
        attribute: &Arc<AllocationAttribute>,
        reserved: &dyn Fn(IpAddr) -> bool,
    ) -> Vec<(IpAddr, u64)> {
        let mut picked = Vec::with_capacity(count as usize);
        self.assign_each(count, attribute, reserved, |address, sequence| {
            picked.push((address, sequence))
        });
        picked
    }

    /// [`IPAMBlock::assign`], handing each address and its sequence number to `taken`
    /// instead of collecting them: the assignment path writes them straight into its
    /// result. Returns how many were taken.
    pub fn assign_each(
        &mut self,
        count: u32,
        attribute: &Arc<AllocationAttribute>,
        reserved: &dyn Fn(IpAddr) -> bool,
        mut taken: impl FnMut(IpAddr, u64),
    ) -> u32 {
        let mut index = None;
        let mut done = 0;
        let mut position = 0;
        while done < count && position < self.unallocated.len() {
            let ordinal = self.unallocated[position];
            let address = self.address(ordinal);
            if reserved(address) {
                position += 1;
                continue;
            }
            if position == 0 {
                self.unallocated.pop_front();
            } else {
                self.unallocated.remove(position);
            }
            // Interned on the first address taken, so that taking nothing changes nothing.
            let index = *index.get_or_insert_with(|| self.intern(attribute));
            let sequence = self.take_sequence();
            self.allocations[ordinal as usize] = Some(index);
            self.set_sequence(ordinal, Some(sequence));
            taken(address, sequence);
            done += 1;
        }
        done
    }

    /// Takes one named address. Fails with the current holder's handle if it is taken.
    pub fn assign_address(
        &mut self,
        address: IpAddr,
        attribute: &Arc<AllocationAttribute>,
    ) -> Result<u64, Option<Option<String>>> {
        let Some(ordinal) = self.ordinal(address) else {
            return Err(None);
        };
        if let Some(index) = self.allocations[ordinal as usize] {
            let holder = self
                .attributes
                .get(index as usize)
                .and_then(|attribute| attribute.handle_id.as_deref().map(str::to_string));
            return Err(Some(holder));
        }
        self.unallocated.retain(|&free| free != ordinal);
        let index = self.intern(attribute);
        let sequence = self.take_sequence();
        self.allocations[ordinal as usize] = Some(index);
        self.set_sequence(ordinal, Some(sequence));
        Ok(sequence)
    }

    /// Frees one address, if the caller's view of it (handle, sequence number) still holds.
    pub fn release(
        &mut self,
        address: IpAddr,
        expected_handle: Option<&str>,
        expected_sequence: Option<u64>,
    ) -> Result<ReleasedAddress, ReleaseRefusal> {
        let ordinal = self.ordinal(address).ok_or(ReleaseRefusal::OutsideBlock)?;
        let index = self.allocations[ordinal as usize].ok_or(ReleaseRefusal::NotAllocated)?;
        let handle_id = self
            .attributes
            .get(index as usize)
            .and_then(|attribute| attribute.handle_id.as_deref().map(str::to_string));
        let sequence = self.sequence_of(ordinal);
        if let Some(expected) = expected_sequence.filter(|&expected| expected != sequence) {
            return Err(ReleaseRefusal::SequenceMismatch {
                expected,
                actual: sequence,
            });
        }
        if let Some(expected) =
            expected_handle.filter(|&expected| handle_id.as_deref() != Some(expected))
        {
            return Err(ReleaseRefusal::HandleMismatch {
                expected: expected.to_string(),
                actual: handle_id,
            });
        }
        self.free_ordinals(&[ordinal]);
        Ok(ReleasedAddress {
            address,
            handle_id,
            sequence,
        })
    }

    /// Frees every address `handle_id` holds here; returns them.
    pub fn release_handle(&mut self, handle_id: &str) -> Vec<IpAddr> {
        let ordinals: Vec<u32> = self
            .allocations_iter()
            .filter(|view| view.handle_id() == Some(handle_id))
            .map(|view| view.ordinal)
            .collect();
        self.free_ordinals(&ordinals);
        ordinals
            .into_iter()
            .map(|ordinal| self.address(ordinal))
            .collect()
    }

    /// Every held address, in ordinal order.
    pub fn allocations_iter(&self) -> impl Iterator<Item = AllocationView<'_>> + '_ {
        self.allocations
            .iter()
            .enumerate()
            .filter_map(move |(ordinal, slot)| {
                let index = (*slot)?;
                let ordinal = ordinal as u32;
                Some(AllocationView {
                    ordinal,
                    address: self.address(ordinal),
                    attribute: self.attributes.get(index as usize).map(Arc::as_ref),
                    sequence: self
                        .sequence_number_for_allocation
                        .get(ordinal as usize)
                        .copied()
                        .flatten(),
                })
            })
    }

    /// How many addresses each handle holds here (`None`: allocations without a handle).
    pub fn handle_counts(&self) -> BTreeMap<Option<&str>, u32> {
        let mut counts = BTreeMap::new();
        for view in self.allocations_iter() {
            *counts.entry(view.handle_id()).or_insert(0) += 1;
        }
        counts
    }

    /// The sequence number recorded for a held ordinal (0 if a foreign writer left none).
    pub fn sequence_of(&self, ordinal: u32) -> u64 {
        self.sequence_number_for_allocation
            .get(ordinal as usize)
            .copied()
            .flatten()
            .unwrap_or(0)
    }

    /// Internal consistency: every ordinal either held or queued as free, exactly once, and
    /// every holder index valid. Returns what is wrong, empty when the block is sound.
    pub fn integrity_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let size = block_size_of(&self.cidr) as usize;
        if self.allocations.len() != size {
            problems.push(format!(
                "has {} allocation slots, but a {} holds {size} addresses",
                self.allocations.len(),
                self.cidr
            ));
        }
        let mut seen_free = vec![false; self.allocations.len()];
        for &ordinal in &self.unallocated {
            match seen_free.get_mut(ordinal as usize) {
                None => problems.push(format!(
                    "free list names ordinal {ordinal}, outside the block"
                )),
                Some(seen) if *seen => {
                    problems.push(format!("free list names {} twice", self.address(ordinal)))
                }
                Some(seen) => *seen = true,
            }
        }
        for (ordinal, slot) in self.allocations.iter().enumerate() {
            let address = self.address(ordinal as u32);
            match slot {
                Some(index) => {
                    if seen_free[ordinal] {
                        problems.push(format!("{address} is both held and on the free list"));
                    }
                    if *index as usize >= self.attributes.len() {
                        problems.push(format!(
                            "{address} names holder #{index}, which does not exist"
                        ));
                    }
                }
                None if !seen_free[ordinal] => {
                    problems.push(format!("{address} is neither held nor on the free list"))
                }
                None => {}
            }
        }
        problems
    }

    fn set_sequence(&mut self, ordinal: u32, sequence: Option<u64>) {
        let slot = ordinal as usize;
        if self.sequence_number_for_allocation.len() <= slot {
            self.sequence_number_for_allocation.resize(slot + 1, None);
        }
        self.sequence_number_for_allocation[slot] = sequence;
    }

    fn take_sequence(&mut self) -> u64 {
        let sequence = self.sequence_number;
        self.sequence_number += 1;
        sequence
    }

    /// The index of `attribute`, adding it if new: the addresses one call assigns share one
    /// entry. (Entries of different calls always differ anyway: each carries its timestamp.)
    ///
    /// An attribute nothing else holds (the caller's is its only reference, as it is for
    /// the first address of every assignment) cannot be among this block's, so the scan,
    /// a pass over every holder of the block, is skipped then.
    fn intern(&mut self, attribute: &Arc<AllocationAttribute>) -> u32 {
        if Arc::strong_count(attribute) > 1
            && let Some(index) = self
                .attributes
                .iter()
                .position(|existing| Arc::ptr_eq(existing, attribute))
        {
            return index as u32;
        }
        self.attributes.push(Arc::clone(attribute));
        (self.attributes.len() - 1) as u32
    }

    fn free_ordinals(&mut self, ordinals: &[u32]) {
        for &ordinal in ordinals {
            let holder = self.allocations[ordinal as usize].take();
            self.set_sequence(ordinal, None);
            self.unallocated.push_back(ordinal);
            if let Some(index) = holder {
                self.drop_attribute_if_unused(index);
            }
        }
    }

    /// Removes an attribute no allocation refers to any more, renumbering the ones after it.
    /// (One pass over the block per freed address, and no allocation: this is on the path
    /// of every release.)
    fn drop_attribute_if_unused(&mut self, index: u32) {
        if self.allocations.contains(&Some(index)) || index as usize >= self.attributes.len() {
            return;
        }
        self.attributes.remove(index as usize);
        for slot in self.allocations.iter_mut().flatten() {
            if *slot > index {
                *slot -= 1;
            }
        }
    }
}

/// `sequenceNumberForAllocation` as Calico writes it: `{"<ordinal>": <number>}`.
mod sequence_map {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        sequences: &[Option<u64>],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_map(
            sequences
                .iter()
                .enumerate()
                .filter_map(|(ordinal, sequence)| {
                    sequence.map(|sequence| (ordinal as u32, sequence))
                }),
        )
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<Option<u64>>, D::Error> {
        let map = BTreeMap::<u32, u64>::deserialize(deserializer)?;
        let length = map
            .keys()
            .next_back()
            .map(|&last| last as usize + 1)
            .unwrap_or(0);
        if length > 1 << 16 {
            return Err(serde::de::Error::custom(format!(
                "ordinal {} is beyond any block",
                length - 1
            )));
        }
        let mut sequences = vec![None; length];
        for (ordinal, sequence) in map {
            sequences[ordinal as usize] = Some(sequence);
        }
        Ok(sequences)
    }
}

/// The number of addresses in a block CIDR.
pub fn block_size_of(cidr: &IpNet) -> u32 {
    let host_bits = u32::from(cidr.max_prefix_len() - cidr.prefix_len());
    1u32.checked_shl(host_bits).unwrap_or(u32::MAX)
}

pub fn address_to_u128(address: IpAddr) -> u128 {
    match address {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

pub fn u128_to_address(family: Family, value: u128) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(value as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attribute(handle: &str) -> Arc<AllocationAttribute> {
        Arc::new(AllocationAttribute {
            handle_id: Some(handle.into()),
            secondary: Secondary::new(),
        })
    }

    fn block() -> IPAMBlock {
        IPAMBlock::new("198.51.100.64/26".parse().unwrap(), Some("node-a"), false)
    }

    fn none(_: IpAddr) -> bool {
        false
    }

    #[test]
    fn new_block_is_all_free_and_owned() {
        let block = block();
        assert_eq!(block.size(), 64);
        assert_eq!(block.free(), 64);
        assert_eq!(block.affinity_node(), Some("node-a"));
        assert!(block.integrity_problems().is_empty());
        assert_eq!(block.address(0), "198.51.100.64".parse::<IpAddr>().unwrap());
        assert_eq!(block.ordinal("198.51.100.127".parse().unwrap()), Some(63));
        assert_eq!(block.ordinal("198.51.100.128".parse().unwrap()), None);
    }

    #[test]
    fn freed_addresses_are_reused_oldest_first() {
        let mut block = IPAMBlock::new("192.0.2.0/30".parse().unwrap(), None, false);
        let a = attribute("a");
        let all = block.assign(4, &a, &none);
        assert_eq!(all.len(), 4);
        assert_eq!(block.free(), 0);
        // Free .2 then .0: .2 went first, so it comes back first.
        block.release(all[2].0, None, None).unwrap();
        block.release(all[0].0, None, None).unwrap();
        let again = block.assign(2, &a, &none);
        assert_eq!(again[0].0, all[2].0);
        assert_eq!(again[1].0, all[0].0);
        assert!(block.integrity_problems().is_empty());
    }

    #[test]
    fn reserved_addresses_are_skipped_but_keep_their_place() {
        let mut block = IPAMBlock::new("192.0.2.0/30".parse().unwrap(), None, false);
        let reserved_first = |address: IpAddr| address == "192.0.2.0".parse::<IpAddr>().unwrap();
        assert_eq!(block.assignable(&reserved_first), 3);
        let got = block.assign(4, &attribute("a"), &reserved_first);
        assert_eq!(got.len(), 3);
        assert!(got.iter().all(|(address, _)| !reserved_first(*address)));
        assert_eq!(block.unallocated, VecDeque::from([0]));
    }

    #[test]
    fn stale_release_of_a_reused_address_is_refused() {
        let mut block = block();
        let (address, first) = block.assign(1, &attribute("pod-1"), &none)[0];
        block.release(address, Some("pod-1"), Some(first)).unwrap();
        // Reuse: fill the block so the same address comes round again.
        let all = block.assign(64, &attribute("pod-2"), &none);
        let second = all.iter().find(|(a, _)| *a == address).unwrap().1;
        assert_ne!(first, second);
        assert_eq!(
            block.release(address, None, Some(first)),
            Err(ReleaseRefusal::SequenceMismatch {
                expected: first,
                actual: second
            })
        );
        assert!(matches!(
            block.release(address, Some("pod-1"), None),
            Err(ReleaseRefusal::HandleMismatch { .. })
        ));
        assert_eq!(block.in_use(), 64);
        assert!(block.release(address, Some("pod-2"), Some(second)).is_ok());
    }

    #[test]
    fn attributes_are_shared_per_handle_and_compacted_on_release() {
        let mut block = block();
        let a = attribute("a");
        block.assign(3, &a, &none);
        block.assign(2, &attribute("b"), &none);
        block.assign(1, &a, &none);
        assert_eq!(block.attributes.len(), 2);
        assert_eq!(block.release_handle("a").len(), 4);
        assert_eq!(block.attributes.len(), 1);
        assert_eq!(block.handle_counts().get(&Some("b")), Some(&2));
        assert!(block.integrity_problems().is_empty());
        assert!(block.release_handle("missing").is_empty());
    }

    #[test]
    fn specific_address_reports_its_holder() {
        let mut block = block();
        let address = "198.51.100.70".parse().unwrap();
        block.assign_address(address, &attribute("x")).unwrap();
        assert_eq!(
            block.assign_address(address, &attribute("y")),
            Err(Some(Some("x".into())))
        );
        assert_eq!(
            block.assign_address("192.0.2.1".parse().unwrap(), &attribute("y")),
            Err(None)
        );
        assert_eq!(
            block.release("198.51.100.71".parse().unwrap(), None, None),
            Err(ReleaseRefusal::NotAllocated)
        );
    }

    #[test]
    fn json_uses_calico_field_names() {
        let mut block = block();
        block.assign(1, &attribute("h"), &none);
        let json = serde_json::to_value(&block).unwrap();
        for field in [
            "cidr",
            "affinity",
            "allocations",
            "unallocated",
            "attributes",
            "sequenceNumber",
            "sequenceNumberForAllocation",
            "strictAffinity",
        ] {
            assert!(json.get(field).is_some(), "missing {field} in {json}");
        }
        assert_eq!(json["attributes"][0]["handle_id"], "h");
        assert_eq!(
            json["sequenceNumberForAllocation"],
            serde_json::json!({"0": 0})
        );
        let back: IPAMBlock = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(serde_json::to_value(&back).unwrap(), json);
        assert_eq!(back.sequence_of(0), 0);
    }

    #[test]
    fn integrity_problems_are_found() {
        let mut block = block();
        block.unallocated.push_back(3);
        block.allocations[5] = Some(9);
        let problems = block.integrity_problems().join("; ");
        assert!(problems.contains("twice"), "{problems}");
        assert!(problems.contains("holder #9"), "{problems}");
    }
}
