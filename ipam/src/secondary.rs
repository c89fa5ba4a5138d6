//! An allocation's `secondary` attributes: Calico's map from name to text (`node`, `pod`,
//! `namespace`, `type`, `timestamp`), held so that making one is cheap.
//!
//! Every automatic assignment makes one, with at least `node` and `timestamp`. As a plain
//! `BTreeMap<String, String>` that was a map node and four strings, each its own heap
//! allocation, and on a hot path that allocates little else that was a third of an
//! assignment's cost. Here `node` is a field (a [`Name`], shared by the allocations a
//! process makes for one node, which for a node's agent is every allocation) and
//! `timestamp` (ten digits) is
//! held inline; any other attribute goes into the map. Outside this module it reads and
//! serializes as the map it stands for, in key order, as Calico writes it.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::block::{ATTRIBUTE_NODE, ATTRIBUTE_TIMESTAMP};
use crate::name::Name;

/// See the module docs. Each key is held in exactly one place (the `timestamp` field only
/// if its text fits), so two values are equal exactly when the maps they stand for are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Secondary {
    node: Option<Name>,
    timestamp: Option<ShortText>,
    other: BTreeMap<String, String>,
}

/// Text of up to [`SHORT_TEXT_CAPACITY`] bytes, held inline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ShortText {
    length: u8,
    bytes: [u8; SHORT_TEXT_CAPACITY],
}

/// Enough for any `u64` in decimal (20 digits).
const SHORT_TEXT_CAPACITY: usize = 22;

impl ShortText {
    fn new(text: &str) -> Option<ShortText> {
        if text.len() > SHORT_TEXT_CAPACITY {
            return None;
        }
        let mut bytes = [0u8; SHORT_TEXT_CAPACITY];
        bytes[..text.len()].copy_from_slice(text.as_bytes());
        Some(ShortText {
            length: text.len() as u8,
            bytes,
        })
    }

    fn decimal(mut value: u64) -> ShortText {
        let mut digits = [0u8; SHORT_TEXT_CAPACITY];
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (value % 10) as u8;
            value /= 10;
            if value == 0 {
                break;
            }
        }
        let length = digits.len() - start;
        let mut bytes = [0u8; SHORT_TEXT_CAPACITY];
        bytes[..length].copy_from_slice(&digits[start..]);
        ShortText {
            length: length as u8,
            bytes,
        }
    }

    fn as_str(&self) -> &str {
        // Only ever filled from a `&str` or with ASCII digits, so this cannot fail.
        std::str::from_utf8(&self.bytes[..usize::from(self.length)]).unwrap_or_default()
    }
}

impl Secondary {
    pub fn new() -> Secondary {
        Secondary::default()
    }

    /// The value of one attribute.
    pub fn get(&self, key: &str) -> Option<&str> {
        match key {
            ATTRIBUTE_NODE => self.node.as_deref(),
            ATTRIBUTE_TIMESTAMP => match &self.timestamp {
                Some(timestamp) => Some(timestamp.as_str()),
                None => self.other.get(key).map(String::as_str),
            },
            _ => self.other.get(key).map(String::as_str),
        }
    }

    /// Sets one attribute, replacing any value it had.
    pub fn insert(&mut self, key: String, value: String) {
        match key.as_str() {
            ATTRIBUTE_NODE => self.node = Some(Name::from(value)),
            ATTRIBUTE_TIMESTAMP => match ShortText::new(&value) {
                Some(timestamp) => {
                    self.timestamp = Some(timestamp);
                    self.other.remove(ATTRIBUTE_TIMESTAMP);
                }
                None => {
                    self.timestamp = None;
                    self.other.insert(key, value);
                }
            },
            _ => {
                self.other.insert(key, value);
            }
        }
    }

    /// Sets `node`. A process assigns for one node, or for one node after another (a
    /// node's agent, only ever for its own), so the name is shared with the previous
    /// allocation's when it is the same.
    pub fn set_node(&mut self, node: &str) {
        thread_local! {
            static LAST: RefCell<Option<Name>> = const { RefCell::new(None) };
        }
        let name = LAST.with(|last| {
            let mut last = last.borrow_mut();
            match &*last {
                Some(name) if **name == *node => name.clone(),
                _ => {
                    let name = Name::new(node);
                    *last = Some(name.clone());
                    name
                }
            }
        });
        self.node = Some(name);
    }

    /// Sets `timestamp` to these Unix seconds, as decimal text.
    pub fn set_timestamp(&mut self, seconds: u64) {
        // Every assignment within the same second writes the same text: convert once.
        thread_local! {
            static LAST: Cell<(u64, ShortText)> = Cell::new((0, ShortText::decimal(0)));
        }
        let text = LAST.with(|last| match last.get() {
            (cached, text) if cached == seconds => text,
            _ => {
                let text = ShortText::decimal(seconds);
                last.set((seconds, text));
                text
            }
        });
        self.timestamp = Some(text);
        if !self.other.is_empty() {
            self.other.remove(ATTRIBUTE_TIMESTAMP);
        }
    }

    pub fn len(&self) -> usize {
        usize::from(self.node.is_some()) + usize::from(self.timestamp.is_some()) + self.other.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every attribute, in key order.
    pub fn entries(&self) -> Vec<(&str, &str)> {
        let mut entries: Vec<(&str, &str)> = self
            .other
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .collect();
        if let Some(node) = &self.node {
            entries.push((ATTRIBUTE_NODE, node));
        }
        if let Some(timestamp) = &self.timestamp {
            entries.push((ATTRIBUTE_TIMESTAMP, timestamp.as_str()));
        }
        entries.sort_unstable_by_key(|&(key, _)| key);
        entries
    }

    /// The attributes as a plain map.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.entries()
            .into_iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }
}

impl Secondary {
    /// The attributes of a map the caller keeps (nothing to copy when it is empty, as it is
    /// for most assignments).
    pub fn from_map(map: &BTreeMap<String, String>) -> Secondary {
        if map.is_empty() {
            return Secondary::new();
        }
        Secondary::from(map.clone())
    }
}

impl From<BTreeMap<String, String>> for Secondary {
    fn from(map: BTreeMap<String, String>) -> Secondary {
        let mut secondary = Secondary::new();
        for (key, value) in map {
            secondary.insert(key, value);
        }
        secondary
    }
}

impl Serialize for Secondary {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.entries())
    }
}

impl<'de> Deserialize<'de> for Secondary {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Secondary, D::Error> {
        BTreeMap::<String, String>::deserialize(deserializer).map(Secondary::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn reads_and_serializes_as_the_map_it_stands_for() {
        let pairs = [
            ("namespace", "default"),
            ("node", "node-a"),
            ("pod", "web-0"),
            ("timestamp", "1763700000"),
            ("zone", "b"),
        ];
        let secondary = Secondary::from(map(&pairs));
        for (key, value) in pairs {
            assert_eq!(secondary.get(key), Some(value), "{key}");
        }
        assert_eq!(secondary.get("type"), None);
        assert_eq!(secondary.len(), 5);
        assert_eq!(secondary.to_map(), map(&pairs));
        assert_eq!(
            serde_json::to_string(&secondary).unwrap(),
            serde_json::to_string(&map(&pairs)).unwrap()
        );
        let back: Secondary =
            serde_json::from_str(&serde_json::to_string(&secondary).unwrap()).unwrap();
        assert_eq!(back, secondary);
    }

    #[test]
    fn the_same_map_built_either_way_is_equal() {
        let mut built = Secondary::new();
        built.insert("pod".to_string(), "web-0".to_string());
        built.set_node("node-a");
        built.set_timestamp(1_763_700_000);
        let parsed = Secondary::from(map(&[
            ("node", "node-a"),
            ("pod", "web-0"),
            ("timestamp", "1763700000"),
        ]));
        assert_eq!(built, parsed);
        built.set_timestamp(0);
        assert_eq!(built.get("timestamp"), Some("0"));
        assert_ne!(built, parsed);
        built.set_timestamp(u64::MAX);
        assert_eq!(built.get("timestamp"), Some("18446744073709551615"));
    }

    #[test]
    fn a_repeated_timestamp_reads_the_same_and_a_new_one_replaces_it() {
        let mut first = Secondary::new();
        let mut second = Secondary::new();
        first.set_timestamp(1_763_700_001);
        second.set_timestamp(1_763_700_001);
        assert_eq!(first, second);
        assert_eq!(second.get("timestamp"), Some("1763700001"));
        second.set_timestamp(1_763_700_002);
        assert_eq!(second.get("timestamp"), Some("1763700002"));
        first.set_timestamp(7);
        assert_eq!(first.get("timestamp"), Some("7"));
    }

    #[test]
    fn consecutive_allocations_for_one_node_share_its_name() {
        let mut first = Secondary::new();
        let mut second = Secondary::new();
        let mut other = Secondary::new();
        first.set_node("node-a");
        second.set_node("node-a");
        other.set_node("node-b");
        let (Some(a), Some(b)) = (&first.node, &second.node) else {
            panic!("node not set");
        };
        assert!(std::ptr::eq(a.as_str(), b.as_str()));
        assert_eq!(first, second);
        assert_eq!(other.get("node"), Some("node-b"));
        second.set_node("node-a");
        assert_eq!(second.get("node"), Some("node-a"));
    }

    #[test]
    fn text_too_long_to_hold_inline_is_kept_whole() {
        let long = "not a number, and longer than any number";
        let mut secondary = Secondary::from(map(&[("timestamp", long)]));
        assert_eq!(secondary.get("timestamp"), Some(long));
        assert_eq!(secondary.len(), 1);
        secondary.set_timestamp(5);
        assert_eq!(secondary.get("timestamp"), Some("5"));
        assert_eq!(secondary.to_map(), map(&[("timestamp", "5")]));
        secondary.insert("timestamp".to_string(), long.to_string());
        assert_eq!(secondary.to_map(), map(&[("timestamp", long)]));
        assert!(!secondary.is_empty());
        assert!(Secondary::new().is_empty());
    }
}
