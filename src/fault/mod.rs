//! Fault injection, in one place: what tests (and `/admin/faults` with
//! `net.fault_injection`) arm, and the hooks production code consults: an actor's next start
//! fails, a health check reports critical ([`Faults`]), links between nodes are cut or a node
//! is isolated ([`NetFaults`], in `net`), the database file's writes fail as on a full or
//! failing disk ([`StorageFaults`], in `storage`), the system clock is set ahead or back (for
//! the whole process: [`set_system_clock_offset_ms`]). Empty, and without effect, in normal
//! operation.
//! Never changes what a component does beyond failing where a real fault would.

mod net;
mod storage;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

pub use net::NetFaults;
pub use storage::{DiskFault, StorageFaults};

/// The injected system clock offset, in ms (0 in normal operation).
static SYSTEM_CLOCK_OFFSET_MS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// Sets this process's system clock ahead (positive) or back, as `crate::clock` reads it: a
/// clock jump, as an operator or a broken NTP makes one.
pub fn set_system_clock_offset_ms(offset: i64) {
    SYSTEM_CLOCK_OFFSET_MS.store(offset, std::sync::atomic::Ordering::SeqCst);
}

/// The injected system clock offset (0 in normal operation).
pub fn system_clock_offset_ms() -> i64 {
    SYSTEM_CLOCK_OFFSET_MS.load(std::sync::atomic::Ordering::Relaxed)
}

/// An injected start failure: the actor's `pre_start` returns it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}: start failure injected")]
pub struct StartFailure(pub String);

/// Faults armed by a test (`crate::testing`): the next start of an actor fails in its
/// `pre_start`, or a health check reports critical; and the network faults. Empty in normal
/// operation.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    inner: Arc<Mutex<FaultSet>>,
    /// Link cuts between nodes, shared by every node of an in-process test cluster.
    pub net: NetFaults,
    /// The node's disk.
    pub storage: StorageFaults,
    /// The Raft log store's next append fails (once), before it reaches the storage writer.
    log_append_failure: Arc<std::sync::atomic::AtomicBool>,
}

#[derive(Debug, Default)]
struct FaultSet {
    fail_next_start: HashSet<String>,
    critical_checks: HashSet<String>,
}

impl Faults {
    /// Faults of one node whose network faults are `net` (shared with its peers).
    pub fn with_net(net: NetFaults) -> Self {
        Faults {
            inner: Arc::default(),
            net,
            storage: StorageFaults::default(),
            log_append_failure: Arc::default(),
        }
    }

    /// The Raft log store's next append fails with a storage error (once): openraft's core
    /// stops with a fatal error while the storage writer stays well.
    pub fn fail_next_log_append(&self) {
        self.log_append_failure
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Called by the Raft log store's append: consumes an armed failure.
    pub fn take_log_append_failure(&self) -> bool {
        self.log_append_failure
            .swap(false, std::sync::atomic::Ordering::SeqCst)
    }

    /// The next start of `actor` (an actor's name, `crate::actors::ActorKind`) fails (once).
    pub fn fail_next_start(&self, actor: impl AsRef<str>) {
        self.lock()
            .fail_next_start
            .insert(actor.as_ref().to_string());
    }

    /// Called by each actor's `pre_start`: consumes an armed start failure.
    pub fn take_start_failure(&self, actor: impl AsRef<str>) -> Result<(), StartFailure> {
        let actor = actor.as_ref();
        if self.lock().fail_next_start.remove(actor) {
            return Err(StartFailure(actor.to_string()));
        }
        Ok(())
    }

    /// Health check `check` reports critical until cleared.
    pub fn force_critical(&self, check: &str, on: bool) {
        let mut set = self.lock();
        if on {
            set.critical_checks.insert(check.to_string());
        } else {
            set.critical_checks.remove(check);
        }
    }

    pub fn is_forced_critical(&self, check: &str) -> bool {
        self.lock().critical_checks.contains(check)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FaultSet> {
        // A panic while holding this lock cannot leave the sets half-updated.
        crate::sync::lock(&self.inner)
    }
}
