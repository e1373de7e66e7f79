//! Disk faults: while armed, the database file's writes and resizes fail as on a full disk
//! (`ENOSPC`) or a failing one (`EIO`), or its syncs fail (`EIO`), through redb's own error
//! path (`storage::backend::FaultyFile` asks here).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

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

/// The disk fault of one node's database file, if one is armed. Cheap to clone; every clone
/// arms the same fault.
#[derive(Debug, Clone, Default)]
pub struct StorageFaults(Arc<AtomicU8>);

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
        self.0.store(code, Ordering::SeqCst);
    }

    /// Writes succeed again (the space came back).
    pub fn heal(&self) {
        self.0.store(NONE, Ordering::SeqCst);
    }

    /// The error a write or resize of the file gets now, if a fault is armed.
    pub fn write_error(&self) -> Option<std::io::Error> {
        match self.0.load(Ordering::Relaxed) {
            FULL => Some(std::io::Error::from_raw_os_error(libc_enospc())),
            FAILING => Some(std::io::Error::from_raw_os_error(libc_eio())),
            _ => None,
        }
    }

    /// The error a sync of the file gets now, if a fault is armed.
    pub fn sync_error(&self) -> Option<std::io::Error> {
        match self.0.load(Ordering::Relaxed) {
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
