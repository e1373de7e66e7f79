//! Network fault injection for tests: cut the link between two nodes (both directions),
//! isolate a node from every other, heal. The Raft transport (both sides) and request
//! forwarding consult it, so a cut link behaves like an unreachable peer on the real transport.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use crate::api::NodeId;

/// Shared by every in-process node of a test cluster; empty (no effect) in normal operation.
#[derive(Debug, Clone, Default)]
pub struct NetFaults {
    inner: Arc<Mutex<Links>>,
}

#[derive(Debug, Default)]
struct Links {
    isolated: BTreeSet<NodeId>,
    cut: BTreeSet<(NodeId, NodeId)>,
}

impl NetFaults {
    /// Nothing from or to `node` gets through.
    pub fn isolate(&self, node: NodeId) {
        self.lock().isolated.insert(node);
    }

    /// Cuts the link between `a` and `b` in both directions.
    pub fn cut(&self, a: NodeId, b: NodeId) {
        let mut links = self.lock();
        links.cut.insert((a, b));
        links.cut.insert((b, a));
    }

    /// Removes every isolation and cut.
    pub fn heal(&self) {
        let mut links = self.lock();
        links.isolated.clear();
        links.cut.clear();
    }

    /// Whether `node` is cut off from every other node.
    pub fn is_isolated(&self, node: NodeId) -> bool {
        self.lock().isolated.contains(&node)
    }

    /// Whether a message from `from` to `to` is dropped.
    pub fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        let links = self.lock();
        links.isolated.contains(&from)
            || links.isolated.contains(&to)
            || links.cut.contains(&(from, to))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Links> {
        // Set insertions and clears cannot leave the sets half-updated.
        crate::sync::lock(&self.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves isolate cuts both directions for one node only, cut is symmetric, heal clears.
    #[test]
    fn links() {
        let faults = NetFaults::default();
        faults.isolate(1);
        assert!(faults.is_cut(1, 2) && faults.is_cut(3, 1));
        assert!(faults.is_isolated(1) && !faults.is_isolated(2));
        assert!(!faults.is_cut(2, 3));
        faults.heal();
        faults.cut(2, 3);
        assert!(faults.is_cut(2, 3) && faults.is_cut(3, 2));
        assert!(!faults.is_cut(1, 2));
        faults.heal();
        assert!(!faults.is_cut(2, 3));
    }
}
