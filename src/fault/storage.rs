//! Disk faults: while armed, the database file's writes and resizes fail as on a full disk
//! (`ENOSPC`) or a failing one (`EIO`), or its syncs fail (`EIO`), through redb's own error
//! path (`storage::backend::FaultyFile` asks here). And silent damage: one stored value of
//! this replica changed behind Raft's back, as a bit flip would (the state machine's next
//! apply does it), for the hash check to find. And a slow disk: writes and syncs of the file
//! wait while stalled, so a test can hold a commit before it wrote anything.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

/// What the disk does while the fault is armed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFault {
    /// Writes and resizes fail: no space left on device (`ENOSPC`).
    Full,
    /// Writes and resizes fail with an I/O error (`EIO`).
    Failing,
    /// Syncs fail with an I/O error (`EIO`), writes succeed: what the kernel reports when
    /// written pages could not reach the disk.
    SyncFails,
}

/// The disk fault of one node's database file, if one is armed, and the damage armed for
/// its state. Cheap to clone; every clone arms the same faults.
#[derive(Debug, Clone, Default)]
pub struct StorageFaults(Arc<Armed>);

#[derive(Debug, Default)]
struct Armed {
    disk: AtomicU8,
    /// Set with `damage`, so an apply checks one atomic, not a lock.
    damage_armed: AtomicBool,
    damage: Mutex<Option<Vec<u8>>>,
    /// Set while writes and syncs wait (`stall_disk`).
    stalled: Mutex<bool>,
    resumed: std::sync::Condvar,
}

const NONE: u8 = 0;
const FULL: u8 = 1;
const FAILING: u8 = 2;
const SYNC_FAILS: u8 = 3;

impl StorageFaults {
    /// From now on, writes to the file fail with `fault`.
    pub fn fail_writes(&self, fault: DiskFault) {
        let code = match fault {
            DiskFault::Full => FULL,
            DiskFault::Failing => FAILING,
            DiskFault::SyncFails => SYNC_FAILS,
        };
        self.0.disk.store(code, Ordering::SeqCst);
    }

    /// Writes succeed again (the space came back).
    pub fn heal(&self) {
        self.0.disk.store(NONE, Ordering::SeqCst);
    }

    /// The error a write or resize of the file gets now, if a fault is armed.
    pub fn write_error(&self) -> Option<std::io::Error> {
        match self.0.disk.load(Ordering::Relaxed) {
            FULL => Some(std::io::Error::from_raw_os_error(libc_enospc())),
            FAILING => Some(std::io::Error::from_raw_os_error(libc_eio())),
            _ => None,
        }
    }

    /// Damages this replica: the state machine's next apply on this node flips the bits of
    /// the first byte of `key`'s stored value (a key not stored is left alone), changing
    /// nothing else and telling no other node.
    pub fn damage_value(&self, key: impl Into<Vec<u8>>) {
        *crate::sync::lock(&self.0.damage) = Some(key.into());
        self.0.damage_armed.store(true, Ordering::SeqCst);
    }

    /// The key whose value to damage now, once (`damage_value`).
    pub fn take_damage(&self) -> Option<Vec<u8>> {
        // A load first: every apply asks, and a damage is almost never armed.
        if !self.0.damage_armed.load(Ordering::Relaxed)
            || !self.0.damage_armed.swap(false, Ordering::SeqCst)
        {
            return None;
        }
        crate::sync::lock(&self.0.damage).take()
    }

    /// From now on, every write and sync of the file waits (on the thread that commits) until
    /// `resume_disk`; then the armed disk fault, if any, applies.
    pub fn stall_disk(&self) {
        *crate::sync::lock(&self.0.stalled) = true;
    }

    pub fn resume_disk(&self) {
        *crate::sync::lock(&self.0.stalled) = false;
        self.0.resumed.notify_all();
    }

    /// Returns once the disk is not stalled (at once when it is not).
    pub fn wait_while_stalled(&self) {
        let stalled = crate::sync::lock(&self.0.stalled);
        drop(
            self.0
                .resumed
                .wait_while(stalled, |stalled| *stalled)
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
    }

    /// The error a sync of the file gets now, if a fault is armed.
    pub fn sync_error(&self) -> Option<std::io::Error> {
        match self.0.disk.load(Ordering::Relaxed) {
            SYNC_FAILS => Some(std::io::Error::from_raw_os_error(libc_eio())),
            _ => None,
        }
    }
}

/// `ENOSPC` on Linux.
fn libc_enospc() -> i32 {
    28
}

/// `EIO` on Linux.
fn libc_eio() -> i32 {
    5
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves an armed fault gives the operating system's error for it, and healing clears it.
    #[test]
    fn armed_faults_give_the_os_errors() {
        let faults = StorageFaults::default();
        assert!(faults.write_error().is_none());
        faults.fail_writes(DiskFault::Full);
        let full = faults.clone().write_error().unwrap();
        assert_eq!(full.kind(), std::io::ErrorKind::StorageFull);
        assert!(faults.sync_error().is_none());
        faults.fail_writes(DiskFault::Failing);
        assert_eq!(faults.write_error().unwrap().raw_os_error(), Some(5));
        faults.fail_writes(DiskFault::SyncFails);
        assert!(faults.write_error().is_none());
        assert_eq!(faults.sync_error().unwrap().raw_os_error(), Some(5));
        faults.heal();
        assert!(faults.write_error().is_none());
    }
}
