//! The database file as redb sees it: redb's own `FileBackend`, with the node's disk faults
//! (`crate::fault::StorageFaults`) consulted before each write, resize and sync, so an injected
//! full or failing disk takes redb's real error path; and a failed sync, injected or real, is
//! recorded (`Store::sync_failed`). Unarmed, it only forwards.

use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use redb::StorageBackend;
use redb::backends::FileBackend;

use crate::fault::StorageFaults;

#[derive(Debug)]
pub(in crate::storage) struct FaultyFile {
    inner: FileBackend,
    faults: StorageFaults,
    /// Set when a sync failed (injected or real), for `Store::sync_failed`.
    sync_failed: Arc<AtomicBool>,
}

impl FaultyFile {
    pub(in crate::storage) fn new(
        file: std::fs::File,
        faults: StorageFaults,
        sync_failed: Arc<AtomicBool>,
    ) -> Result<Self, redb::DatabaseError> {
        Ok(FaultyFile {
            inner: FileBackend::new(file)?,
            faults,
            sync_failed,
        })
    }

    fn check(&self) -> Result<(), std::io::Error> {
        self.faults.write_error().map_or(Ok(()), Err)
    }
}

impl StorageBackend for FaultyFile {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.check()?;
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.faults.wait_while_stalled();
        let synced = match self.faults.sync_error() {
            Some(error) => Err(error),
            None => self.inner.sync_data(),
        };
        if synced.is_err() {
            self.sync_failed.store(true, Ordering::SeqCst);
        }
        synced
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.faults.wait_while_stalled();
        self.check()?;
        self.inner.write(offset, data)
    }

    fn close(&self) -> Result<(), std::io::Error> {
        self.inner.close()
    }

    fn try_lock_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), redb::BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), redb::BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.query_lock_range(start, end)
    }
}
