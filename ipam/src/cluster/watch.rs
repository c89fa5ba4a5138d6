//! Noticing that the store changed, without listing it: [`ChangeWatch`] over
//! [`Store::generation`].

use crate::store::{Store, StoreError};

/// The last [`Store::generation`] seen. A node agent keeps one, asks
/// [`ChangeWatch::changed`] every few hundred milliseconds, and re-reads nodes, peers and
/// configuration only when it says yes. The first call always says yes: there is nothing
/// to compare with yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChangeWatch {
    seen: Option<u64>,
}

impl ChangeWatch {
    pub fn new() -> ChangeWatch {
        ChangeWatch::default()
    }

    /// Whether anything was written since the last call (or this is the first). Read the
    /// store *after* this returns true: a write that lands between the two is then either
    /// in what is read or noticed by the next call, never lost.
    pub fn changed<S: Store + ?Sized>(&mut self, store: &S) -> Result<bool, StoreError> {
        let now = store.generation()?;
        let changed = self.seen != Some(now);
        self.seen = Some(now);
        Ok(changed)
    }

    /// The generation last seen, if any.
    pub fn seen(&self) -> Option<u64> {
        self.seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{BGPPeer, Node};
    use crate::{Ipam, MemoryStore};

    #[test]
    fn says_yes_once_per_batch_of_writes() {
        let ipam = Ipam::new(MemoryStore::new());
        let mut watch = ChangeWatch::new();
        assert!(watch.changed(ipam.store()).unwrap(), "the first look");
        assert!(!watch.changed(ipam.store()).unwrap());
        ipam.register_node("node-a", |_| {}).unwrap();
        ipam.put_bgp_peer(BGPPeer {
            name: "tor".to_string(),
            peer_ip: Some("192.0.2.1".to_string()),
            as_number: Some(64513),
            ..BGPPeer::default()
        })
        .unwrap();
        assert!(watch.changed(ipam.store()).unwrap());
        assert!(!watch.changed(ipam.store()).unwrap());
        ipam.register_node("node-a", |_| {}).unwrap();
        assert!(
            !watch.changed(ipam.store()).unwrap(),
            "an unchanged node writes nothing"
        );
        ipam.put_node(Node::new("node-b")).unwrap();
        assert!(watch.changed(ipam.store()).unwrap());
        assert_eq!(watch.seen(), Some(ipam.generation().unwrap()));
    }
}
