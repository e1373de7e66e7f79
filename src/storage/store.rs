//! The `Store`: one redb database per node (a file, or redb's in-memory backend: the same code)
//! holding the Raft log, the Raft meta and the key-value state machine.
//!
//! Durability rules (`docs/storage.md`):
//! - log appends, vote, truncate, purge and snapshot installs commit with fsync
//!   (`Durability::Immediate`); appends are the only fsync on the write path;
//! - `save_committed` and `apply` commit without fsync (`Durability::None`) and become durable
//!   with the next fsync'd commit of the same file;
//! - a clean close ends with one fsync'd commit, so a restart replays nothing.
//!
//! Every method here blocks on redb; async callers run them on a blocking thread.
//!
//! Long because every durability rule of the Raft log and meta is stated next to the write that
//! keeps it.

use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, WriteTransaction,
};

use crate::command::{Entry, LogId, StoredMembership, Vote};
use crate::files::{create_private_dir, private_file};
use crate::storage::codec::{decode_log_entry, read_meta, write_meta, write_meta_opt};
use crate::storage::error::{Error, IndexText, Result, ValidationError};
use crate::storage::schema::*;
use crate::storage::tail::LogTail;
use crate::storage::types::MergedStep;

/// Name of the database file inside a node's data directory.
pub const DB_FILE_NAME: &str = "aspen.redb";
/// Directory for snapshot files inside a node's data directory.
pub const SNAPSHOT_DIR_NAME: &str = "snapshots";
pub use crate::limits::{CACHE_BYTES_DEFAULT, QUICK_REPAIR_DEFAULT};

/// Where the store keeps its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageMode {
    /// `DIR/aspen.redb` and `DIR/snapshots/`.
    File(PathBuf),
    /// redb's in-memory backend; snapshots go to a private temporary directory.
    InMemory,
}

/// How to open a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub mode: StorageMode,
    pub cache_bytes: usize,
    /// Save redb's allocator state in every write transaction, so opening after a crash does
    /// not walk the whole file. Measured (`cargo bench --bench restart`, `--bench storage`):
    /// with it a restart after SIGKILL takes milliseconds whatever the file size, but each
    /// durable append costs about twice as much; without it the reopen walks the file (about
    /// 1 s per GiB here). Off by default: the append is the hot path, and a 1M-key store
    /// reopens well inside the 2 s restart target either way.
    pub quick_repair: bool,
    /// The disk faults a test arms (none in normal operation).
    pub faults: crate::fault::StorageFaults,
}

impl StoreOptions {
    pub fn file(dir: impl Into<PathBuf>) -> Self {
        StoreOptions {
            mode: StorageMode::File(dir.into()),
            cache_bytes: CACHE_BYTES_DEFAULT,
            quick_repair: QUICK_REPAIR_DEFAULT,
            faults: Default::default(),
        }
    }

    pub fn in_memory() -> Self {
        StoreOptions {
            mode: StorageMode::InMemory,
            cache_bytes: CACHE_BYTES_DEFAULT,
            quick_repair: QUICK_REPAIR_DEFAULT,
            faults: Default::default(),
        }
    }
}

/// The durable positions the cross-storage validation compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct DurableMeta {
    pub last_purged: Option<u64>,
    pub last_applied: Option<u64>,
    pub committed: Option<u64>,
    /// Index of the last log entry, or of the last purged entry or installed snapshot when they
    /// are later (they stand in for entries this log no longer holds).
    pub last_log_index: Option<u64>,
}

/// Checks `last_purged <= last_applied <= committed <= last log index`. `None` (nothing
/// recorded) sorts before every index.
pub fn validate(meta: &DurableMeta) -> Result<(), ValidationError> {
    if meta.last_purged > meta.last_applied {
        return Err(ValidationError::PurgedBeyondApplied {
            last_purged: IndexText(meta.last_purged),
            last_applied: IndexText(meta.last_applied),
        });
    }
    if meta.last_applied > meta.committed {
        return Err(ValidationError::AppliedBeyondCommitted {
            last_applied: IndexText(meta.last_applied),
            committed: IndexText(meta.committed),
        });
    }
    if meta.committed > meta.last_log_index {
        return Err(ValidationError::CommittedBeyondLog {
            committed: IndexText(meta.committed),
            last_log_index: IndexText(meta.last_log_index),
        });
    }
    Ok(())
}

/// Compaction repeats redb's `compact` at most this often (each pass moves what it can).
const COMPACTION_PASSES_MAX: u32 = 16;

/// What a compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compaction {
    /// File size before and after (`None` for the in-memory store).
    pub bytes_before: Option<u64>,
    pub bytes_after: Option<u64>,
    /// How long no transaction could begin: reads and writes waited this long at most.
    pub stalled: Duration,
    /// redb passes that moved pages.
    pub passes: u32,
}

/// Clears a flag when dropped, however the scope ends.
struct ClearOnDrop<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for ClearOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// One node's storage. Share it as `Arc<Store>`: reads open their own redb read transactions,
/// writes serialize inside redb.
pub struct Store {
    /// Every transaction begins under the read lock; compaction takes the write lock, so no
    /// transaction can begin while it runs (redb's `compact` needs the database alone).
    /// `None` only between closing the database after an I/O error and opening it again
    /// (`reopen`): transactions then fail, rather than read anything else.
    db: std::sync::RwLock<Option<Database>>,
    /// Set while `compact` holds the database.
    compacting: std::sync::atomic::AtomicBool,
    snapshot_dir: PathBuf,
    /// Keeps the in-memory store's snapshot directory alive; removed on drop.
    _snapshot_tmp: Option<tempfile::TempDir>,
    /// The data directory of a file store.
    data_dir: Option<PathBuf>,
    quick_repair: bool,
    /// The committed log id openraft saved last: kept here and written with the next apply
    /// (or the clean stop), not in a transaction of its own.
    pub(in crate::storage) committed: std::sync::Mutex<Option<LogId>>,
    /// The file's size after the last write (`u64::MAX`: not measured yet).
    size: std::sync::atomic::AtomicU64,
    /// Copies of the last log entries, for reads that need no transaction (`tail.rs`).
    pub(in crate::storage) tail: std::sync::Mutex<LogTail>,
    /// The auth state as last read, checked on every client request (`Store::auth`).
    pub(in crate::storage) auth: std::sync::Mutex<AuthCache>,
    /// The state machine's clock (`CLOCK`) in memory, so a read needs no extra lookup.
    clock_ms: std::sync::atomic::AtomicU64,
    /// How to open the file again (a file store opened by `open`).
    reopen: Option<Reopen>,
    /// Set when a write failed with an I/O error: redb refuses every later write until the
    /// database is opened again (`StorageError::PreviousIo`), which `reopen` does.
    io_failed: std::sync::Mutex<Option<String>>,
    /// The meta of the snapshot this process last made current (built or installed); taken
    /// while renaming one over `current.snap`, so an older build never replaces a newer one.
    pub(in crate::storage) current_snapshot: std::sync::Mutex<Option<crate::command::SnapshotMeta>>,
    /// The hash checks this node applied (`hashkv`).
    pub(in crate::storage) hash_checks: std::sync::Arc<crate::storage::hashkv::HashChecks>,
    /// The node's storage faults: a file store's disk faults go through its backend (opened
    /// again with them by `reopen`); a replica damage armed here is done by the next apply.
    pub(in crate::storage) faults: crate::fault::StorageFaults,
    /// A leader's published append that was lost before its commit (`published.rs`).
    pub(in crate::storage) published_lost: std::sync::Mutex<Option<LostAppend>>,
    /// Woken when published entries commit or are lost.
    pub(in crate::storage) published_settled: tokio::sync::Notify,
    /// Counts the commits that changed the state machine (applies, snapshot installs): what
    /// watches wait on.
    pub(in crate::storage) changes: tokio::sync::watch::Sender<u64>,
    /// Where the log stops being known durable, for the Raft transport.
    pub(in crate::storage) flush_mark: crate::flush::FlushMark,
}

/// What a lost published append leaves (`published.rs`): why, and the first index lost.
#[derive(Debug, Clone)]
pub(in crate::storage) struct LostAppend {
    pub(in crate::storage) why: String,
    pub(in crate::storage) first: u64,
}

/// What opening the database file again needs.
struct Reopen {
    path: PathBuf,
    cache_bytes: usize,
    sync_failed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// Opens (or creates) the database file at `path` through the node's disk faults.
fn open_file(
    path: &Path,
    cache_bytes: usize,
    faults: &crate::fault::StorageFaults,
    sync_failed: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Result<Database> {
    let file = private_file()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let backend = crate::storage::backend::FaultyFile::new(
        file,
        faults.clone(),
        std::sync::Arc::clone(sync_failed),
    )?;
    let mut builder = redb::Builder::new();
    builder.set_cache_size(cache_bytes);
    Ok(builder.create_with_backend(backend)?)
}

/// The decoded auth state and a generation that every commit changing it bumps: a reader
/// keeps what it read only when no such commit happened since it began.
#[derive(Debug, Default)]
pub(in crate::storage) struct AuthCache {
    generation: u64,
    state: Option<std::sync::Arc<crate::api::AuthState>>,
}

impl Store {
    /// The auth state as of the last committed apply (cached between changes).
    pub fn auth(&self) -> Result<std::sync::Arc<crate::api::AuthState>> {
        let generation = {
            let cache = crate::sync::lock(&self.auth);
            if let Some(state) = &cache.state {
                return Ok(std::sync::Arc::clone(state));
            }
            cache.generation
        };
        let state = std::sync::Arc::new(
            crate::storage::codec::read_meta(&self.begin_read()?, AUTH)?.unwrap_or_default(),
        );
        let mut cache = crate::sync::lock(&self.auth);
        if cache.generation == generation {
            cache.state = Some(std::sync::Arc::clone(&state));
        }
        Ok(state)
    }

    /// The state machine's clock: the largest `now_ms` applied (as far as this process knows).
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Raises the in-memory clock to `clock_ms` (never lowers it).
    pub(in crate::storage) fn raise_clock(&self, clock_ms: u64) {
        self.clock_ms
            .fetch_max(clock_ms, std::sync::atomic::Ordering::SeqCst);
    }

    /// Called after a commit that changed the auth state.
    pub(in crate::storage) fn auth_changed(&self) {
        let mut cache = crate::sync::lock(&self.auth);
        cache.generation += 1;
        cache.state = None;
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("snapshot_dir", &self.snapshot_dir)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the store and makes sure every table exists.
    pub fn open(options: &StoreOptions) -> Result<Store> {
        let mut builder = redb::Builder::new();
        builder.set_cache_size(options.cache_bytes);
        let sync_failed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (db, snapshot_dir, snapshot_tmp) = match &options.mode {
            StorageMode::File(dir) => {
                create_private_dir(dir)
                    .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
                let snapshot_dir = dir.join(SNAPSHOT_DIR_NAME);
                create_private_dir(&snapshot_dir)
                    .map_err(|e| Error::io(format!("creating {}", snapshot_dir.display()), e))?;
                // Created with mode 0600 (redb initializes an empty file; an existing one
                // keeps its mode).
                let path = dir.join(DB_FILE_NAME);
                let db = open_file(&path, options.cache_bytes, &options.faults, &sync_failed)?;
                (db, snapshot_dir, None)
            }
            StorageMode::InMemory => {
                let tmp = tempfile::Builder::new()
                    .prefix("aspen-snapshots-")
                    .tempdir()
                    .map_err(|e| Error::io("creating a snapshot directory", e))?;
                let db = builder.create_with_backend(redb::backends::InMemoryBackend::new())?;
                (db, tmp.path().to_path_buf(), Some(tmp))
            }
        };
        let data_dir = match &options.mode {
            StorageMode::File(dir) => Some(dir.clone()),
            StorageMode::InMemory => None,
        };
        let store = Store {
            db: std::sync::RwLock::new(Some(db)),
            compacting: Default::default(),
            snapshot_dir,
            _snapshot_tmp: snapshot_tmp,
            data_dir,
            quick_repair: options.quick_repair,
            committed: Default::default(),
            size: std::sync::atomic::AtomicU64::new(u64::MAX),
            tail: Default::default(),
            auth: Default::default(),
            clock_ms: Default::default(),
            reopen: match &options.mode {
                StorageMode::File(dir) => Some(Reopen {
                    path: dir.join(DB_FILE_NAME),
                    cache_bytes: options.cache_bytes,
                    sync_failed: std::sync::Arc::clone(&sync_failed),
                }),
                StorageMode::InMemory => None,
            },
            io_failed: Default::default(),
            current_snapshot: Default::default(),
            hash_checks: Default::default(),
            faults: options.faults.clone(),
            published_lost: Default::default(),
            published_settled: Default::default(),
            changes: tokio::sync::watch::Sender::new(0),
            flush_mark: Default::default(),
        };
        store.init_tables()?;
        store.load_memory()?;
        store.remove_stale_snapshot_files()?;
        Ok(store)
    }

    /// What the store keeps in memory, from what the file holds: `committed`, so an apply
    /// never writes a lower one (a replay after a restart applies without saving it first),
    /// and the state machine's clock.
    fn load_memory(&self) -> Result<()> {
        let txn = self.begin_read()?;
        *crate::sync::lock(&self.committed) = read_meta(&txn, COMMITTED)?;
        self.raise_clock(read_meta(&txn, CLOCK)?.unwrap_or(0));
        Ok(())
    }

    /// Records that a write failed with `error`; when it is an I/O error, redb refuses every
    /// later write until [`Store::reopen`].
    fn note_write_error(&self, error: &Error) {
        if error.poisons_redb() {
            crate::sync::lock(&self.io_failed).get_or_insert_with(|| error.to_string());
        }
    }

    /// Whether a write failed with an I/O error since the database was (re)opened.
    pub fn io_failed(&self) -> bool {
        crate::sync::lock(&self.io_failed).is_some()
    }

    /// Whether a sync of the database file ever failed in this process. Not retried: after a
    /// failed fsync the kernel may have dropped pages that never reached the disk, and a
    /// reopened file could show as durable what is not (PostgreSQL's "fsyncgate").
    pub fn sync_failed(&self) -> bool {
        self.reopen
            .as_ref()
            .is_some_and(|reopen| reopen.sync_failed.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// The first I/O error a write failed with since the database was (re)opened.
    pub fn io_error(&self) -> Option<String> {
        crate::sync::lock(&self.io_failed).clone()
    }

    /// Closes the database and opens its file again, as redb requires after an I/O error:
    /// redb repairs what the failed commit left, and the in-memory copies (log tail, auth,
    /// committed, size) are read again from the file. No transaction begins meanwhile;
    /// read transactions still open get "database closed". The in-memory store has no file
    /// and nothing to reopen.
    pub(in crate::storage) fn reopen(&self) -> Result<()> {
        // Published entries the failed write held are gone with it.
        self.lose_published("the database was opened again after an I/O error");
        let Some(reopen) = &self.reopen else {
            // No file (the in-memory store): nothing to open again.
            crate::sync::lock(&self.io_failed).take();
            return Ok(());
        };
        {
            let mut db = self
                .db
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(Err(error)) = db.take().map(Database::close) {
                tracing::warn!(%error, "storage: closing the database after an I/O error");
            }
            *db = Some(open_file(
                &reopen.path,
                reopen.cache_bytes,
                &self.faults,
                &reopen.sync_failed,
            )?);
        }
        crate::sync::lock(&self.tail).clear();
        self.auth_changed();
        self.size
            .store(u64::MAX, std::sync::atomic::Ordering::Relaxed);
        self.load_memory()?;
        crate::sync::lock(&self.io_failed).take();
        Ok(())
    }

    /// Opens an existing file store for an offline check: creates nothing and removes nothing
    /// (no table set-up, no cleanup of the snapshot directory). redb may still repair its
    /// allocator state when the file was not closed cleanly.
    pub fn open_existing(dir: &Path, cache_bytes: usize) -> Result<Store> {
        let path = dir.join(DB_FILE_NAME);
        if !path.is_file() {
            return Err(Error::Refused(format!(
                "{} holds no store ({DB_FILE_NAME} not found)",
                dir.display()
            )));
        }
        let mut builder = redb::Builder::new();
        builder.set_cache_size(cache_bytes);
        let db = builder.open(&path)?;
        Ok(Store {
            db: std::sync::RwLock::new(Some(db)),
            compacting: Default::default(),
            snapshot_dir: dir.join(SNAPSHOT_DIR_NAME),
            _snapshot_tmp: None,
            data_dir: Some(dir.to_path_buf()),
            quick_repair: false,
            committed: Default::default(),
            size: std::sync::atomic::AtomicU64::new(u64::MAX),
            tail: Default::default(),
            auth: Default::default(),
            clock_ms: Default::default(),
            reopen: None,
            io_failed: Default::default(),
            current_snapshot: Default::default(),
            hash_checks: Default::default(),
            faults: Default::default(),
            published_lost: Default::default(),
            published_settled: Default::default(),
            changes: tokio::sync::watch::Sender::new(0),
            flush_mark: Default::default(),
        })
    }

    /// Changes each time a commit changed the state machine (an apply, a snapshot installed):
    /// a watch reads the history again when it does.
    pub fn subscribe_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub(in crate::storage) fn state_changed(&self) {
        self.changes
            .send_modify(|count| *count = count.wrapping_add(1));
    }

    fn init_tables(&self) -> Result<()> {
        let txn = self.begin_write(Durability::Immediate)?;
        {
            txn.open_table(RAFT_LOG)?;
            txn.open_table(RAFT_META)?;
            txn.open_table(KV)?;
            txn.open_table(SM_META)?;
            txn.open_table(LEASES)?;
            txn.open_table(IDX_EXPIRES)?;
            txn.open_table(IDX_LEASE)?;
            txn.open_table(IDX_LEASE_DEADLINE)?;
            txn.open_table(VAULTS)?;
            txn.open_table(HISTORY)?;
            let mut file_meta = txn.open_table(FILE_META)?;
            let stored = file_meta.get(META_FORMAT)?.map(|v| v.value().to_vec());
            match stored {
                None => {
                    file_meta.insert(META_FORMAT, FORMAT_VERSION.to_le_bytes().as_slice())?;
                }
                Some(bytes) if bytes == FORMAT_VERSION.to_le_bytes() => {}
                Some(bytes) if bytes == FORMAT_VERSION_BEFORE_HISTORY.to_le_bytes() => {
                    tracing::info!(
                        "storage: upgraded the file to format {FORMAT_VERSION} (history starts at its next change)"
                    );
                    file_meta.insert(META_FORMAT, FORMAT_VERSION.to_le_bytes().as_slice())?;
                }
                Some(bytes) if bytes == FORMAT_VERSION_BEFORE_VAULTS.to_le_bytes() => {
                    let vaults = crate::storage::upgrade::rebuild_vaults(&txn)?;
                    tracing::info!(
                        vaults,
                        "storage: upgraded the file to format {FORMAT_VERSION} (vault metadata computed from the keys)"
                    );
                    file_meta.insert(META_FORMAT, FORMAT_VERSION.to_le_bytes().as_slice())?;
                }
                Some(bytes) => {
                    return Err(Error::corrupt(
                        "file_meta",
                        format!("format {bytes:?} is not this build's format {FORMAT_VERSION}"),
                    ));
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn database(&self) -> std::sync::RwLockReadGuard<'_, Option<Database>> {
        // The lock guards no data of its own: a panic under it leaves the database whole.
        self.db
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Why no transaction can begin: the database was closed after an I/O error and could
    /// not be opened again yet.
    fn closed(&self) -> Error {
        Error::Refused(format!(
            "the database was closed after an I/O error and is not open again yet ({})",
            self.io_error().unwrap_or_default()
        ))
    }

    /// Reclaims the free space in the file (redb's `compact`, repeated until it finds nothing
    /// more to move). No transaction can begin while it runs, so reads and writes stall for
    /// its duration (reported as `stalled`); it first waits, at most `wait_for_open`, for the
    /// transactions already open (a long SQL query, a backup) to end.
    pub(in crate::storage) fn compact(&self, wait_for_open: Duration) -> Result<Compaction> {
        let bytes_before = self.measure_size();
        let started = Instant::now();
        self.compacting
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let _clear = ClearOnDrop(&self.compacting);
        let mut guard = self
            .db
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(db) = guard.as_mut() else {
            return Err(self.closed());
        };
        let mut passes = 0u32;
        loop {
            match db.compact() {
                Ok(true) if passes < COMPACTION_PASSES_MAX => passes += 1,
                Ok(_) => break,
                Err(redb::CompactionError::TransactionInProgress)
                    if started.elapsed() < wait_for_open =>
                {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(redb::CompactionError::TransactionInProgress) => {
                    return Err(Error::Refused(format!(
                        "compaction: transactions still open after {} ms (a long SQL query or a \
                         backup); try again",
                        wait_for_open.as_millis()
                    )));
                }
                Err(error) => return Err(redb::Error::from(error).into()),
            }
        }
        let stalled = started.elapsed();
        drop(guard);
        Ok(Compaction {
            bytes_before,
            bytes_after: self.measure_size(),
            stalled,
            passes,
        })
    }

    /// Whether a compaction holds the database now (transactions wait for it).
    pub fn is_compacting(&self) -> bool {
        self.compacting.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Size of the database file in bytes (`None` for the in-memory store).
    /// The database file's size as of the last write (`None` for the in-memory store): what
    /// the quota alarm and the metrics read, without a `stat()` per request.
    pub fn file_size(&self) -> Option<u64> {
        self.data_dir.as_ref()?;
        match self.size.load(std::sync::atomic::Ordering::Relaxed) {
            u64::MAX => self.measure_size(),
            bytes => Some(bytes),
        }
    }

    /// Measures the file's size now and keeps it for `file_size`.
    fn measure_size(&self) -> Option<u64> {
        let dir = self.data_dir.as_ref()?;
        let bytes = std::fs::metadata(dir.join(DB_FILE_NAME)).ok()?.len();
        self.size.store(bytes, std::sync::atomic::Ordering::Relaxed);
        Some(bytes)
    }

    /// Passes `written` through after measuring the file again (a write may have grown it, a
    /// compaction shrunk it).
    pub(in crate::storage) fn sized<T>(&self, written: Result<T>) -> Result<T> {
        self.measure_size();
        self.noted(written)
    }

    /// Passes `written` through after noting its I/O error, if it failed with one.
    pub(in crate::storage) fn noted<T>(&self, written: Result<T>) -> Result<T> {
        if let Err(error) = &written {
            self.note_write_error(error);
        }
        written
    }

    /// The quota alarm: `Some((file bytes, quota))` while the file is at or over `quota`
    /// bytes. From the size measured after the last write, so it clears by itself once a
    /// compaction shrinks the file. Never on for the in-memory store (no file).
    pub fn quota_alarm(&self, quota: u64) -> Option<(u64, u64)> {
        let bytes = self.file_size()?;
        (bytes >= quota).then_some((bytes, quota))
    }

    /// Where snapshot files live.
    pub fn snapshot_dir(&self) -> &Path {
        &self.snapshot_dir
    }

    /// Starts a write transaction with the given durability (and quick repair if configured).
    pub(in crate::storage) fn begin_write(
        &self,
        durability: Durability,
    ) -> Result<WriteTransaction> {
        let mut txn = match self.database().as_ref() {
            Some(db) => db.begin_write()?,
            None => return Err(self.closed()),
        };
        txn.set_durability(durability)?;
        txn.set_quick_repair(self.quick_repair);
        Ok(txn)
    }

    pub fn begin_read(&self) -> Result<ReadTransaction> {
        match self.database().as_ref() {
            Some(db) => Ok(db.begin_read()?),
            None => Err(self.closed()),
        }
    }

    /// Ends with one fsync'd commit: every earlier non-durable commit (applies, `committed`)
    /// becomes durable, so a restart replays nothing.
    pub(in crate::storage) fn close(&self) -> Result<()> {
        let txn = self.begin_write(Durability::Immediate)?;
        self.write_committed(&txn, None)?;
        txn.commit()?;
        Ok(())
    }

    // ---- Raft log ----

    /// Appends entries in one transaction committed with fsync. When this returns, every entry
    /// is durable.
    pub(in crate::storage) fn append(&self, entries: &[Entry]) -> Result<()> {
        self.write_merged(&[MergedStep::Append(entries)]).map(drop)
    }

    /// Log entries with indexes in `range`, in order, when the in-memory tail holds all of
    /// them (`None`: read them with `log_entries`). Never blocks on the file.
    pub fn recent_log_entries(&self, range: &impl RangeBounds<u64>) -> Option<Vec<Entry>> {
        crate::sync::lock(&self.tail).get(range)
    }

    /// Log entries with indexes in `range`, in order: from the in-memory tail when it holds
    /// them all, else from the file.
    pub fn log_entries(&self, range: impl RangeBounds<u64>) -> Result<Vec<Entry>> {
        match self.recent_log_entries(&range) {
            Some(entries) => Ok(entries),
            None => self.log_entries_in_file(range),
        }
    }

    /// Log entries with indexes in `range`, in order, read from the file (for a caller that
    /// already asked the tail), followed by the published entries in `range` that the file
    /// did not hold yet (`published.rs`).
    pub fn log_entries_in_file(&self, range: impl RangeBounds<u64>) -> Result<Vec<Entry>> {
        // Taken before the read: what commits meanwhile is in the file.
        let published = crate::sync::lock(&self.tail).pinned_entries();
        let txn = self.begin_read()?;
        let log = txn.open_table(RAFT_LOG)?;
        let mut entries = Vec::new();
        for item in log.range((range.start_bound().cloned(), range.end_bound().cloned()))? {
            let (index, bytes) = item?;
            entries.push(decode_log_entry(index.value(), bytes.value())?);
        }
        let start = match range.start_bound() {
            std::ops::Bound::Included(start) => Some(*start),
            std::ops::Bound::Excluded(start) => Some(start + 1),
            std::ops::Bound::Unbounded => None,
        };
        for entry in published {
            let next = match entries.last() {
                Some(last) => Some(last.log_id.index + 1),
                None => start,
            };
            if range.contains(&entry.log_id.index)
                && next.is_none_or(|next| next == entry.log_id.index)
            {
                entries.push(entry);
            }
        }
        Ok(entries)
    }

    /// `(last purged log id, last log id)`; the last log id falls back to the last purged one
    /// when the log is empty.
    pub fn log_state(&self) -> Result<(Option<LogId>, Option<LogId>)> {
        let txn = self.begin_read()?;
        let last_purged = read_meta(&txn, LAST_PURGED)?;
        let log = txn.open_table(RAFT_LOG)?;
        let last = match log.last()? {
            Some((index, bytes)) => Some(decode_log_entry(index.value(), bytes.value())?.log_id),
            None => last_purged,
        };
        Ok((last_purged, last))
    }

    /// Deletes log entries from `index` on (conflicting, uncommitted entries). Fsync'd.
    pub(in crate::storage) fn truncate(&self, index: u64) -> Result<()> {
        // Out of the tail before the commit: a reader that misses them reads the file.
        crate::sync::lock(&self.tail).truncate(index);
        let txn = self.begin_write(Durability::Immediate)?;
        txn.open_table(RAFT_LOG)?.retain_in(index.., |_, _| false)?;
        txn.commit()?;
        Ok(())
    }

    /// Deletes log entries up to and including `log_id` and records it as purged. Fsync'd.
    pub(in crate::storage) fn purge(&self, log_id: &LogId) -> Result<()> {
        crate::sync::lock(&self.tail).purge(log_id.index);
        let txn = self.begin_write(Durability::Immediate)?;
        txn.open_table(RAFT_LOG)?
            .retain_in(..=log_id.index, |_, _| false)?;
        write_meta(&txn, LAST_PURGED, log_id)?;
        txn.commit()?;
        Ok(())
    }

    pub(in crate::storage) fn save_vote(&self, vote: &Vote) -> Result<()> {
        let txn = self.begin_write(Durability::Immediate)?;
        write_meta(&txn, VOTE, vote)?;
        txn.commit()?;
        Ok(())
    }

    pub fn read_vote(&self) -> Result<Option<Vote>> {
        read_meta(&self.begin_read()?, VOTE)
    }

    /// Records the committed log id in memory; the next apply writes it in its own
    /// transaction (so `last_applied <= committed` holds in every commit), and the next
    /// fsync'd commit makes it durable. Losing it in a crash only means replaying less.
    pub(in crate::storage) fn save_committed(&self, committed: Option<&LogId>) -> Result<()> {
        *crate::sync::lock(&self.committed) = committed.copied();
        Ok(())
    }

    /// The committed log id saved last (in memory since this store opened, else on disk).
    pub fn read_committed(&self) -> Result<Option<LogId>> {
        match *crate::sync::lock(&self.committed) {
            Some(committed) => Ok(Some(committed)),
            None => read_meta(&self.begin_read()?, COMMITTED),
        }
    }

    /// Writes the committed log id saved last, raised to `applied` (this transaction's last
    /// applied entry, which openraft committed before it applied it), in `txn`. A saved id at
    /// or past a published entry not committed yet is not written (the file may not hold
    /// that entry: `published.rs`); `applied` always is.
    pub(in crate::storage) fn write_committed(
        &self,
        txn: &WriteTransaction,
        applied: Option<LogId>,
    ) -> Result<()> {
        let saved = (*crate::sync::lock(&self.committed))
            .filter(|id| self.first_unflushed().is_none_or(|first| id.index < first));
        let committed = saved.max(applied);
        if committed.is_some() {
            write_meta_opt(txn, COMMITTED, committed.as_ref())?;
        }
        Ok(())
    }

    // ---- State machine meta ----

    /// The last applied log id and the membership, read together.
    pub fn applied_state(&self) -> Result<(Option<LogId>, StoredMembership)> {
        let txn = self.begin_read()?;
        let applied = read_meta(&txn, LAST_APPLIED)?;
        let membership = read_meta(&txn, MEMBERSHIP)?.unwrap_or_default();
        Ok((applied, membership))
    }

    // ---- Validation ----

    /// The durable positions, read from one snapshot of the file.
    pub fn durable_meta(&self) -> Result<DurableMeta> {
        let txn = self.begin_read()?;
        let last_purged = read_meta(&txn, LAST_PURGED)?;
        let installed = read_meta(&txn, SNAPSHOT_INSTALLED)?;
        let committed = read_meta(&txn, COMMITTED)?;
        let last_applied = read_meta(&txn, LAST_APPLIED)?;
        let log = txn.open_table(RAFT_LOG)?;
        let last_entry = log.last()?.map(|(index, _)| index.value());
        let last_purged = last_purged.map(|id: LogId| id.index);
        Ok(DurableMeta {
            last_purged,
            last_applied: last_applied.map(|id| id.index),
            committed: committed.map(|id| id.index),
            last_log_index: last_entry
                .max(last_purged)
                .max(installed.map(|id: LogId| id.index)),
        })
    }

    /// redb's own integrity check (page checksums, allocator state). Needs the store alone:
    /// no other handle may be open.
    pub fn check_integrity(&mut self) -> Result<bool> {
        let db = self
            .db
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match db.as_mut() {
            Some(db) => Ok(db.check_integrity()?),
            None => Err(self.closed()),
        }
    }

    /// The cross-storage validation over what is in the file now.
    pub fn validate(&self) -> Result<DurableMeta> {
        let meta = self.durable_meta()?;
        validate(&meta)?;
        Ok(meta)
    }
}

/// Writes log entries in `txn` (the caller commits it, with fsync).
pub(in crate::storage) fn append_in(txn: &WriteTransaction, entries: &[Entry]) -> Result<()> {
    let mut log = txn.open_table(RAFT_LOG)?;
    let mut buffer = Vec::new();
    for entry in entries {
        buffer.clear();
        buffer.push(LOG_ENTRY_FORMAT);
        let bytes = postcard::to_extend(entry, std::mem::take(&mut buffer))
            .map_err(|e| Error::corrupt(format!("log entry {}", entry.log_id), e))?;
        log.insert(entry.log_id.index, bytes.as_slice())?;
        buffer = bytes;
    }
    Ok(())
}

impl Store {
    /// The hash checks this node applied (`crate::api::hashkv`).
    pub fn hash_checks(&self) -> &crate::storage::hashkv::HashChecks {
        &self.hash_checks
    }

    /// Called right after the commit that applied hash check `check`, proposed at
    /// `proposed_ms`: hashes the state as that commit left it. A failure to begin the read is
    /// the check's result, not the write's (the write committed). A check applied too late
    /// for the leader to still wait for it (a node catching up on its log) is not hashed:
    /// this compares the leader's clock with this node's, so a skew of more than
    /// `HASH_CHECK_WAIT_MS` skips a check or hashes one for nothing, and changes no state.
    pub(in crate::storage) fn start_hash_check(&self, check: u64, proposed_ms: u64) {
        use crate::api::HashKvError::Failed;
        let late_ms = crate::clock::now_ms().saturating_sub(proposed_ms);
        if late_ms > crate::limits::HASH_CHECK_WAIT_MS {
            let late = format!("applied {late_ms} ms after it was proposed: not hashed");
            return self.hash_checks.finish(check, Err(Failed(late)));
        }
        match self.begin_read() {
            Ok(txn) => self.hash_checks.start(check, txn),
            Err(error) => self
                .hash_checks
                .finish(check, Err(Failed(error.to_string()))),
        }
    }
}
