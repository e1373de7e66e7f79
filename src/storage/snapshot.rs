//! Snapshot files: built by streaming one read transaction to a file, installed atomically from
//! one. Memory stays bounded: one record at a time, whatever the size of the state.
//!
//! Format (all integers little endian): `SNAPSHOT_MAGIC`, then records, each a `u32` length and a
//! postcard `Record`: one `Header`, the `Key`s in key order, the `Lease`s in id order, one
//! `VaultLimits`, the `Vault`s, the `Auth` state, the `Clock`, the `HistoryBounds` and the
//! `History` events in revision order (both absent in files from before history: the
//! history then starts at the file's revision), and one `End` carrying the counts and the
//! CRC-32 of every byte before it. Indexes are not stored: installing rebuilds them.
//!
//! The current snapshot is `snapshots/current.snap`, replaced by an atomic rename. Installing
//! commits the state with fsync before the rename: a crash between the two leaves the previous
//! current snapshot, older than the state but still a valid committed state to send.
//!
//! Long because building, verifying and installing must agree on one record format, kept in the
//! same file.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use redb::Durability;
use serde::{Deserialize, Serialize};

use crate::api::VaultMeta;
use crate::command::{LogId, SnapshotMeta, VaultLimits};
use crate::limits::SNAPSHOT_RECORD_BYTES_MAX;
use crate::storage::codec::{read_meta, read_meta_in, write_meta, write_meta_opt};
use crate::storage::error::{Error, Result};
use crate::storage::schema::*;
use crate::storage::state_machine::FIRST_LEASE_ID;
use crate::storage::state_machine::Machine;
use crate::storage::store::Store;
use crate::storage::types::{KvEntry, LeaseRecord};

const SNAPSHOT_MAGIC: &[u8; 8] = b"ASPNSNAP";
const SNAPSHOT_FORMAT: u32 = 1;
pub(crate) const CURRENT_FILE: &str = "current.snap";

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Record {
    Header {
        format: u32,
        meta: SnapshotMeta,
        revision: u64,
        next_lease_id: u64,
    },
    Key {
        key: Vec<u8>,
        entry: KvEntry,
    },
    Lease {
        id: u64,
        lease: LeaseRecord,
    },
    End {
        keys: u64,
        leases: u64,
        crc32: u32,
    },
    /// First record of a backup file (`crate::storage::backup`): no log id, no membership.
    Backup(BackupHeader),
    /// A vault's metadata (after the leases).
    Vault {
        name: Vec<u8>,
        meta: VaultMeta,
    },
    /// The vault limits in force (after the leases, before the vaults).
    VaultLimits(VaultLimits),
    /// Clients, roles and grants (after the vaults; absent in files from before auth).
    Auth(crate::api::AuthState),
    /// The largest `now_ms` applied (after the auth state; absent in older files).
    Clock(u64),
    /// What the history holds (after the clock; absent in older files).
    HistoryBounds(crate::storage::types::HistoryBounds),
    /// One history event (after the floor, in revision order).
    History {
        revision: u64,
        number: u32,
        event: crate::storage::types::HistoryEvent,
    },
}

/// What a backup file says of itself before its keys: enough to show progress and to refuse a
/// file of another format before reading it all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    pub format: u32,
    /// The revision the state had in the read transaction the backup was taken from.
    pub revision: u64,
    pub next_lease_id: u64,
    /// Stored keys (live or not yet expired by the TTL actor) and leases in the file.
    pub keys: u64,
    pub leases: u64,
    /// Wall clock of the node that took it, for people.
    pub created_at_ms: u64,
}

/// What a snapshot file holds, once fully read and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotSummary {
    pub meta: SnapshotMeta,
    pub revision: u64,
    pub keys: u64,
    pub leases: u64,
}

impl Store {
    fn current_snapshot_path(&self) -> PathBuf {
        self.snapshot_dir().join(CURRENT_FILE)
    }

    /// Removes files a crash left behind in the snapshot directory (half-written snapshots);
    /// keeps the current snapshot.
    pub(crate) fn remove_stale_snapshot_files(&self) -> Result<()> {
        let entries = std::fs::read_dir(self.snapshot_dir())
            .map_err(|e| Error::io(format!("listing {}", self.snapshot_dir().display()), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("listing the snapshot directory", e))?;
            if entry.file_name() != CURRENT_FILE {
                std::fs::remove_file(entry.path())
                    .map_err(|e| Error::io(format!("removing {}", entry.path().display()), e))?;
            }
        }
        Ok(())
    }

    /// Writes the state machine, as of one read transaction, to a new current snapshot file;
    /// when a newer snapshot became current meanwhile (one installed while this one was
    /// written), that one is kept and returned instead.
    pub fn build_snapshot(&self) -> Result<(SnapshotMeta, File)> {
        let (meta, tmp) = self.write_snapshot()?;
        self.make_current(meta, tmp)
    }

    /// Writes the state machine, as of one read transaction, to a synced temporary file.
    fn write_snapshot(&self) -> Result<(SnapshotMeta, tempfile::NamedTempFile)> {
        let txn = self.begin_read()?;
        // Meta and data come from the same read transaction: apply may run meanwhile.
        let last_applied = read_meta(&txn, LAST_APPLIED)?;
        let membership = read_meta(&txn, MEMBERSHIP)?.unwrap_or_default();
        let revision = read_meta(&txn, REVISION)?.unwrap_or(0);
        let next_lease_id = read_meta(&txn, NEXT_LEASE_ID)?.unwrap_or(FIRST_LEASE_ID);
        let view = crate::storage::reads::ReadView::new(txn, 0)?;
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id: snapshot_id(last_applied),
        };

        let tmp = tempfile::NamedTempFile::new_in(self.snapshot_dir())
            .map_err(|e| Error::io("creating a snapshot file", e))?;
        let mut writer = RecordWriter::new(BufWriter::new(tmp.as_file()), SNAPSHOT);
        writer.write_magic(SNAPSHOT_MAGIC)?;
        writer.record(&Record::Header {
            format: SNAPSHOT_FORMAT,
            meta: meta.clone(),
            revision,
            next_lease_id,
        })?;
        write_state(&view, &mut writer, |_| {})?;
        drop(writer);
        drop(view);
        tmp.as_file()
            .sync_all()
            .map_err(|e| Error::io("syncing a snapshot file", e))?;
        Ok((meta, tmp))
    }

    /// Renames the built snapshot `tmp` over the current one, unless the current one is newer
    /// (an install committed while `tmp` was written): then `tmp` is dropped and the current
    /// one returned. Builds and installs rename under one lock, so an older snapshot never
    /// replaces a newer one.
    fn make_current(
        &self,
        meta: SnapshotMeta,
        tmp: tempfile::NamedTempFile,
    ) -> Result<(SnapshotMeta, File)> {
        let path = self.current_snapshot_path();
        let mut newest = crate::sync::lock(&self.current_snapshot);
        if let Some(current) = &*newest
            && current.last_log_id > meta.last_log_id
        {
            let current = current.clone();
            drop(tmp);
            let file = File::open(&path)
                .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
            return Ok((current, file));
        }
        tmp.persist(&path)
            .map_err(|e| Error::io(format!("renaming to {}", path.display()), e.error))?;
        sync_dir(self.snapshot_dir())?;
        *newest = Some(meta.clone());
        let file =
            File::open(&path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        Ok((meta, file))
    }

    /// The current snapshot and a file handle at its start, if one was built or installed.
    pub fn current_snapshot(&self) -> Result<Option<(SnapshotMeta, File)>> {
        let path = self.current_snapshot_path();
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("opening {}", path.display()), e)),
        };
        // The whole file is checked before it is sent: a damaged one would break every
        // follower that installs it. It is replaced by a snapshot of the state as it is now.
        let meta = match verify_snapshot_file(&mut file) {
            Ok(summary) => summary.meta,
            Err(error) => {
                tracing::warn!(%error, path = %path.display(),
                    "snapshot: the current snapshot does not check out; building a new one");
                return self.build_snapshot().map(Some);
            }
        };
        file.seek(SeekFrom::Start(0))
            .map_err(|e| Error::io("rewinding the snapshot file", e))?;
        Ok(Some((meta, file)))
    }

    /// A fresh file to receive a snapshot into (deleted when dropped).
    pub fn snapshot_receive_file(&self) -> Result<File> {
        tempfile::tempfile_in(self.snapshot_dir())
            .map_err(|e| Error::io("creating a file to receive a snapshot", e))
    }

    /// Replaces the state machine with the snapshot in `file`, in one transaction committed
    /// with fsync: state tables, `last_applied`, membership, counters, and
    /// `committed := max(committed, snapshot)`. A file that does not check out (bad magic,
    /// truncated, wrong checksum, meta other than `meta`) is refused and nothing changes.
    pub(in crate::storage) fn install_snapshot(
        &self,
        meta: &SnapshotMeta,
        file: &mut File,
    ) -> Result<SnapshotSummary> {
        file.seek(SeekFrom::Start(0))
            .map_err(|e| Error::io("rewinding the received snapshot", e))?;
        let copy = tempfile::NamedTempFile::new_in(self.snapshot_dir())
            .map_err(|e| Error::io("creating a snapshot file", e))?;
        let mut reader = RecordReader::new(BufReader::new(file), SNAPSHOT);
        let mut tee = RecordWriter::new(BufWriter::new(copy.as_file()), SNAPSHOT);
        reader.read_magic(SNAPSHOT_MAGIC)?;
        tee.write_magic(SNAPSHOT_MAGIC)?;

        let txn = self.begin_write(Durability::Immediate)?;
        txn.delete_table(KV)?;
        txn.delete_table(SM_META)?;
        txn.delete_table(LEASES)?;
        txn.delete_table(IDX_EXPIRES)?;
        txn.delete_table(IDX_LEASE)?;
        txn.delete_table(IDX_LEASE_DEADLINE)?;
        txn.delete_table(VAULTS)?;
        txn.delete_table(HISTORY)?;
        let mut machine = Machine::open(&txn)?;
        // An error anywhere below drops `txn` uncommitted: the state stays as it was.
        let summary = load_records(&mut reader, &mut tee, &mut machine)?;
        if summary.meta.last_log_id != meta.last_log_id {
            return Err(Error::corrupt(
                "snapshot",
                format!(
                    "file holds the state at {:?}, the leader announced {:?}",
                    summary.meta.last_log_id, meta.last_log_id
                ),
            ));
        }
        machine.save_meta(&txn)?;
        let clock_ms = machine.clock_ms();
        drop(machine);
        write_meta_opt(&txn, LAST_APPLIED, meta.last_log_id.as_ref())?;
        write_meta(&txn, MEMBERSHIP, &meta.last_membership)?;
        let raised = read_meta_in(&txn, COMMITTED)?
            .max(meta.last_log_id)
            .max(*crate::sync::lock(&self.committed));
        write_meta_opt(&txn, COMMITTED, raised.as_ref())?;
        write_meta_opt(&txn, SNAPSHOT_INSTALLED, meta.last_log_id.as_ref())?;
        tee.flush()?;
        drop(tee);
        copy.as_file()
            .sync_all()
            .map_err(|e| Error::io("syncing a snapshot file", e))?;
        self.raise_clock(clock_ms);
        txn.commit()?;
        self.auth_changed();
        self.state_changed();
        // Only once the install committed: a failed one leaves `committed` where it was.
        *crate::sync::lock(&self.committed) = raised;
        let path = self.current_snapshot_path();
        let mut newest = crate::sync::lock(&self.current_snapshot);
        copy.persist(&path)
            .map_err(|e| Error::io(format!("renaming to {}", path.display()), e.error))?;
        sync_dir(self.snapshot_dir())?;
        *newest = Some(meta.clone());
        Ok(summary)
    }
}

/// Reads a whole snapshot file and checks its framing, key order and checksum, without
/// installing it.
pub fn verify_snapshot_file(file: &mut File) -> Result<SnapshotSummary> {
    file.seek(SeekFrom::Start(0))
        .map_err(|e| Error::io("rewinding the snapshot", e))?;
    let mut reader = RecordReader::new(BufReader::new(file), SNAPSHOT);
    reader.read_magic(SNAPSHOT_MAGIC)?;
    let header = read_header(&mut reader)?;
    let (keys, leases) = load_body(&mut reader, None, |_| Ok(()))?;
    Ok(SnapshotSummary {
        meta: header.meta,
        revision: header.revision,
        keys,
        leases,
    })
}

struct Header {
    meta: SnapshotMeta,
    revision: u64,
    next_lease_id: u64,
}

fn read_header<R: Read>(reader: &mut RecordReader<R>) -> Result<Header> {
    match reader.record()? {
        Record::Header {
            format: SNAPSHOT_FORMAT,
            meta,
            revision,
            next_lease_id,
        } => Ok(Header {
            meta,
            revision,
            next_lease_id,
        }),
        Record::Header { format, .. } => Err(Error::corrupt(
            SNAPSHOT,
            format!("format {format} is not this build's format {SNAPSHOT_FORMAT}"),
        )),
        _ => Err(Error::corrupt("snapshot", "does not start with a header")),
    }
}

fn load_records<R: Read, W: Write>(
    reader: &mut RecordReader<R>,
    tee: &mut RecordWriter<W>,
    machine: &mut Machine<'_>,
) -> Result<SnapshotSummary> {
    let header = read_header(reader)?;
    tee.record(&Record::Header {
        format: SNAPSHOT_FORMAT,
        meta: header.meta.clone(),
        revision: header.revision,
        next_lease_id: header.next_lease_id,
    })?;
    machine.set_counters(header.revision, header.next_lease_id);
    let (keys, leases) = load_body(reader, Some(machine), |record| tee.record(record))?;
    tee.finish(keys, leases)?;
    Ok(SnapshotSummary {
        meta: header.meta,
        revision: header.revision,
        keys,
        leases,
    })
}

/// Writes every stored key, then every lease, the vault limits and every vault's metadata of
/// `view`, and the closing `End` record; calls
/// `progress` with the number of keys written so far every 1,024 keys. Returns the counts.
pub(crate) fn write_state<W: Write>(
    view: &crate::storage::reads::ReadView,
    writer: &mut RecordWriter<W>,
    mut progress: impl FnMut(u64),
) -> Result<(u64, u64)> {
    let (mut keys, mut leases) = (0u64, 0u64);
    for item in view.raw_entries()? {
        let (key, entry) = item?;
        writer.record(&Record::Key { key, entry })?;
        keys += 1;
        if keys.is_multiple_of(1024) {
            progress(keys);
        }
    }
    for item in view.raw_leases()? {
        let (id, lease) = item?;
        writer.record(&Record::Lease { id, lease })?;
        leases += 1;
    }
    writer.record(&Record::VaultLimits(view.vault_limits()?))?;
    for item in view.raw_vaults()? {
        let (name, meta) = item?;
        writer.record(&Record::Vault { name, meta })?;
    }
    writer.record(&Record::Auth(view.auth()?))?;
    writer.record(&Record::Clock(view.clock_ms()?))?;
    let bounds =
        view.history_bounds()?
            .unwrap_or(crate::storage::types::HistoryBounds::starting_at(
                view.revision(),
            ));
    writer.record(&Record::HistoryBounds(bounds))?;
    for item in view.raw_history()? {
        let (revision, number, event) = item?;
        writer.record(&Record::History {
            revision,
            number,
            event,
        })?;
    }
    writer.finish(keys, leases)?;
    progress(keys);
    Ok((keys, leases))
}

/// Reads the records after the header up to and including `End`, checking key order, the
/// counts and the checksum: restores each into `machine` when given, and hands each (not
/// `End`) to `each`. Returns the key and lease counts.
pub(crate) fn load_body<R: Read>(
    reader: &mut RecordReader<R>,
    mut machine: Option<&mut Machine<'_>>,
    mut each: impl FnMut(&Record) -> Result<()>,
) -> Result<(u64, u64)> {
    let what = reader.what;
    let (mut keys, mut leases) = (0u64, 0u64);
    let mut previous_key: Option<Vec<u8>> = None;
    // The bounds read, and the last event's place: events come after the bounds, in order.
    let mut bounds: Option<crate::storage::types::HistoryBounds> = None;
    let mut previous_event: Option<(u64, u32)> = None;
    loop {
        let record = reader.record()?;
        check_record(what, &record)?;
        match &record {
            Record::Key { key, entry } => {
                if previous_key
                    .as_deref()
                    .is_some_and(|prev| prev >= key.as_slice())
                {
                    return Err(Error::corrupt(what, "keys out of order"));
                }
                if let Some(machine) = machine.as_deref_mut() {
                    machine.restore_key(key, entry)?;
                }
                previous_key = Some(key.clone());
                keys += 1;
            }
            Record::Lease { id, lease } => {
                if let Some(machine) = machine.as_deref_mut() {
                    machine.restore_lease(*id, lease)?;
                }
                leases += 1;
            }
            Record::Vault { name, meta } => {
                if let Some(machine) = machine.as_deref_mut() {
                    machine.restore_vault(name, meta)?;
                }
            }
            Record::VaultLimits(limits) => {
                if let Some(machine) = machine.as_deref_mut() {
                    machine.set_vault_limits(*limits);
                }
            }
            Record::Auth(auth) => {
                if let Some(machine) = machine.as_deref_mut() {
                    machine.set_auth(auth.clone());
                }
            }
            Record::Clock(clock_ms) => {
                if let Some(machine) = machine.as_deref_mut() {
                    machine.set_clock(*clock_ms);
                }
            }
            Record::HistoryBounds(read) => {
                if bounds.is_some() {
                    return Err(Error::corrupt(what, "second history bounds"));
                }
                if read.events_from < read.floor {
                    return Err(Error::corrupt(
                        what,
                        format!("history bounds {read:?}: events from before the floor"),
                    ));
                }
                bounds = Some(*read);
                if let Some(machine) = machine.as_deref_mut() {
                    machine.restore_history_bounds(*read);
                }
            }
            Record::History {
                revision,
                number,
                event,
            } => {
                let Some(bounds) = bounds else {
                    return Err(Error::corrupt(what, "a history event before the bounds"));
                };
                if *revision < bounds.events_from || previous_event >= Some((*revision, *number)) {
                    return Err(Error::corrupt(
                        what,
                        format!(
                            "history event {revision}.{number} out of order (events from {}, previous {previous_event:?})",
                            bounds.events_from
                        ),
                    ));
                }
                if let Some(machine) = machine.as_deref_mut() {
                    machine.restore_history(*revision, *number, event)?;
                }
                previous_event = Some((*revision, *number));
            }
            Record::End { .. } => {
                finish_check(reader, keys, leases)?;
                return Ok((keys, leases));
            }
            Record::Header { .. } | Record::Backup(_) => {
                return Err(Error::corrupt(what, "second header"));
            }
        }
        each(&record)?;
    }
}

/// Refuses a record no command could have written (a key or value over its limit, a bad
/// vault name, a lease TTL out of range, an auth state that breaks its rules), naming it: a
/// snapshot or backup brings in nothing the commands would refuse.
fn check_record(what: &str, record: &Record) -> Result<()> {
    let refuse =
        |subject: String, reason: String| Err(Error::corrupt(what, format!("{subject}: {reason}")));
    match record {
        Record::Key { key, entry } => {
            if let Err(error) = crate::api::kv::check_stored_key(key, entry.value.len()) {
                return refuse(
                    format!(
                        "key {:?}",
                        String::from_utf8_lossy(&key[..key.len().min(64)])
                    ),
                    error.to_string(),
                );
            }
            if entry.version == 0 || entry.create_revision > entry.mod_revision {
                return refuse(
                    format!(
                        "key {:?}",
                        String::from_utf8_lossy(&key[..key.len().min(64)])
                    ),
                    format!(
                        "version {} with create revision {} after mod revision {}",
                        entry.version, entry.create_revision, entry.mod_revision
                    ),
                );
            }
        }
        Record::Lease { id, lease } => {
            if let Err(error) = crate::api::kv::check_ttl(lease.ttl_ms) {
                return refuse(format!("lease {id}"), error.to_string());
            }
        }
        Record::Vault { name, .. } => {
            let mut key = b"vault/".to_vec();
            key.extend_from_slice(name);
            key.push(b'/');
            if let Err(error) = crate::api::kv::check_stored_key(&key, 0) {
                return refuse("vault".into(), error.to_string());
            }
        }
        Record::Auth(auth) => {
            if let Err(error) = auth.validate() {
                return refuse("auth state".into(), error.to_string());
            }
        }
        Record::History { event, .. } => {
            let subject = || {
                format!(
                    "history event of key {:?}",
                    String::from_utf8_lossy(&event.key[..event.key.len().min(64)])
                )
            };
            for entry in event.entry.iter().chain(&event.prev) {
                if let Err(error) = crate::api::kv::check_stored_key(&event.key, entry.value.len())
                {
                    return refuse(subject(), error.to_string());
                }
            }
            if event.entry.is_none() && event.prev.is_none() {
                return refuse(subject(), "neither a record nor the one it replaced".into());
            }
        }
        Record::VaultLimits(_)
        | Record::HistoryBounds(_)
        | Record::Clock(_)
        | Record::End { .. }
        | Record::Header { .. }
        | Record::Backup(_) => {}
    }
    Ok(())
}

/// Checks the `End` record just read against the counts and the checksum of what preceded it,
/// and that nothing follows it.
fn finish_check<R: Read>(reader: &mut RecordReader<R>, keys: u64, leases: u64) -> Result<()> {
    let what = reader.what;
    let Some(Record::End {
        keys: end_keys,
        leases: end_leases,
        crc32,
    }) = reader.last_end.take()
    else {
        return Err(Error::corrupt(what, "missing end record"));
    };
    if crc32 != reader.crc_before_last {
        return Err(Error::corrupt(
            what,
            format!(
                "checksum {:08x} does not match the content ({:08x})",
                crc32, reader.crc_before_last
            ),
        ));
    }
    if (end_keys, end_leases) != (keys, leases) {
        return Err(Error::corrupt(
            what,
            format!("end says {end_keys} keys and {end_leases} leases, found {keys} and {leases}"),
        ));
    }
    let mut extra = [0u8; 1];
    if reader
        .inner
        .read(&mut extra)
        .map_err(|e| Error::io(format!("reading the {what}"), e))?
        != 0
    {
        return Err(Error::corrupt(what, "bytes after the end record"));
    }
    Ok(())
}

/// What the records are for, in error messages.
const SNAPSHOT: &str = "snapshot";

/// Writes records (`u32` length + postcard) and keeps the CRC-32 of every byte written.
pub(crate) struct RecordWriter<W: Write> {
    inner: W,
    what: &'static str,
    crc: crc32fast::Hasher,
    buffer: Vec<u8>,
}

impl<W: Write> RecordWriter<W> {
    pub(crate) fn new(inner: W, what: &'static str) -> Self {
        RecordWriter {
            inner,
            what,
            crc: crc32fast::Hasher::new(),
            buffer: Vec::new(),
        }
    }

    fn bytes(&mut self, bytes: &[u8]) -> Result<()> {
        self.crc.update(bytes);
        let what = self.what;
        self.inner
            .write_all(bytes)
            .map_err(|e| Error::io(format!("writing a {what}"), e))
    }

    pub(crate) fn write_magic(&mut self, magic: &[u8; 8]) -> Result<()> {
        self.bytes(magic)
    }

    pub(crate) fn record(&mut self, record: &Record) -> Result<()> {
        self.buffer.clear();
        let encoded = postcard::to_extend(record, std::mem::take(&mut self.buffer))
            .map_err(|e| Error::corrupt(format!("{} record", self.what), e))?;
        assert!(
            encoded.len() <= SNAPSHOT_RECORD_BYTES_MAX,
            "snapshot record over the limit"
        );
        self.bytes(&(encoded.len() as u32).to_le_bytes())?;
        self.bytes(&encoded)?;
        self.buffer = encoded;
        Ok(())
    }

    fn finish(&mut self, keys: u64, leases: u64) -> Result<()> {
        let crc32 = self.crc.clone().finalize();
        self.record(&Record::End {
            keys,
            leases,
            crc32,
        })?;
        self.flush()
    }

    fn flush(&mut self) -> Result<()> {
        let what = self.what;
        self.inner
            .flush()
            .map_err(|e| Error::io(format!("writing a {what}"), e))
    }

    pub(crate) fn into_inner(self) -> W {
        self.inner
    }
}

/// Reads records, checking each length against the limit, and keeps the running CRC-32.
pub(crate) struct RecordReader<R: Read> {
    inner: R,
    what: &'static str,
    crc: crc32fast::Hasher,
    /// The CRC of every byte before the last record read (what an `End` record carries).
    crc_before_last: u32,
    last_end: Option<Record>,
    buffer: Vec<u8>,
}

impl<R: Read> RecordReader<R> {
    pub(crate) fn new(inner: R, what: &'static str) -> Self {
        RecordReader {
            inner,
            what,
            crc: crc32fast::Hasher::new(),
            crc_before_last: 0,
            last_end: None,
            buffer: Vec::new(),
        }
    }

    fn exact(&mut self, len: usize) -> Result<()> {
        self.buffer.resize(len, 0);
        let what = self.what;
        self.inner.read_exact(&mut self.buffer).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::corrupt(what, "truncated")
            } else {
                Error::io(format!("reading a {what}"), e)
            }
        })?;
        self.crc.update(&self.buffer);
        Ok(())
    }

    pub(crate) fn read_magic(&mut self, magic: &[u8; 8]) -> Result<()> {
        self.exact(magic.len())?;
        if self.buffer != magic {
            return Err(Error::corrupt(
                self.what,
                format!("not an Aspen {} (bad magic)", self.what),
            ));
        }
        Ok(())
    }

    pub(crate) fn record(&mut self) -> Result<Record> {
        self.crc_before_last = self.crc.clone().finalize();
        self.exact(4)?;
        let len = u32::from_le_bytes(self.buffer[..4].try_into().expect("4 bytes")) as usize;
        if len > SNAPSHOT_RECORD_BYTES_MAX {
            return Err(Error::corrupt(
                self.what,
                format!("record of {len} bytes exceeds the limit of {SNAPSHOT_RECORD_BYTES_MAX}"),
            ));
        }
        self.exact(len)?;
        let record: Record = postcard::from_bytes(&self.buffer)
            .map_err(|e| Error::corrupt(format!("{} record", self.what), e))?;
        if let Record::End {
            keys,
            leases,
            crc32,
        } = &record
        {
            self.last_end = Some(Record::End {
                keys: *keys,
                leases: *leases,
                crc32: *crc32,
            });
        }
        Ok(record)
    }
}

fn snapshot_id(last_applied: Option<LogId>) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    match last_applied {
        Some(id) => format!("{}-{}-{nanos:x}", id.leader_id.term, id.index),
        None => format!("empty-{nanos:x}"),
    }
}

fn sync_dir(dir: &std::path::Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("syncing {}", dir.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot file holding `records` after its header, closed with a correct end record.
    fn snapshot_of(records: &[Record], keys: u64, leases: u64) -> File {
        let mut file = tempfile::tempfile().unwrap();
        let mut writer = RecordWriter::new(&mut file, SNAPSHOT);
        writer.write_magic(SNAPSHOT_MAGIC).unwrap();
        writer
            .record(&Record::Header {
                format: SNAPSHOT_FORMAT,
                meta: SnapshotMeta::default(),
                revision: 9,
                next_lease_id: 1,
            })
            .unwrap();
        for record in records {
            writer.record(record).unwrap();
        }
        writer.finish(keys, leases).unwrap();
        drop(writer);
        file
    }

    fn key(key: &[u8], value_bytes: usize) -> Record {
        Record::Key {
            key: key.to_vec(),
            entry: KvEntry {
                value: vec![b'v'; value_bytes],
                version: 1,
                create_revision: 2,
                mod_revision: 2,
                lease: None,
                expires_at_ms: None,
            },
        }
    }

    fn refusal(records: &[Record], keys: u64, leases: u64) -> String {
        let mut file = snapshot_of(records, keys, leases);
        match verify_snapshot_file(&mut file) {
            Err(error) => error.to_string(),
            Ok(summary) => panic!("accepted: {summary:?}"),
        }
    }

    /// An in-memory store with `count` puts applied (log indexes 1..=count).
    fn store_with(count: u64) -> Store {
        let store = Store::open(&crate::storage::StoreOptions::in_memory()).unwrap();
        let entries: Vec<crate::command::Entry> = (1..=count)
            .map(|i| crate::command::Entry {
                log_id: LogId::new(openraft::CommittedLeaderId::new(1, 0), i),
                payload: openraft::EntryPayload::Normal(crate::command::Request {
                    now_ms: 1,
                    command: crate::command::Command::Write(crate::api::WriteOp::Put(
                        crate::api::Put::new(format!("k{i}"), "v"),
                    )),
                }),
            })
            .collect();
        store.apply(&entries).unwrap();
        store
    }

    // Proves the build/install race is closed: a snapshot built of an older state whose
    // rename comes after a newer snapshot was installed does not replace it; the build hands
    // back the installed one, and the current snapshot stays the newer.
    #[test]
    fn a_slow_build_never_replaces_a_newer_install() {
        let target = store_with(2);
        let (older, tmp) = target.write_snapshot().unwrap();
        let source = store_with(5);
        let (newer, mut file) = source.build_snapshot().unwrap();
        target.install_snapshot(&newer, &mut file).unwrap();
        let (kept, _) = target.make_current(older.clone(), tmp).unwrap();
        assert_eq!(kept.last_log_id, newer.last_log_id);
        let (current, _) = target.current_snapshot().unwrap().unwrap();
        assert_eq!(current.last_log_id, newer.last_log_id);
        assert_ne!(current.last_log_id, older.last_log_id);
    }

    // Proves every record of a snapshot (and so of a backup, which shares the reader) is held
    // to the rules of the commands that write its kind, with a checksum that holds: a key over
    // the limit, a bad vault key, a value over 1 MiB, a lease TTL of 0, an auth state whose
    // client holds a missing role, each refused naming it; the same file with good records
    // is accepted.
    #[test]
    fn records_no_command_could_write_are_refused() {
        let good = [key(b"a", 3), key(b"vault/v1/k", 3)];
        let mut file = snapshot_of(&good, 2, 0);
        assert_eq!(verify_snapshot_file(&mut file).unwrap().keys, 2);

        let long = vec![b'k'; crate::limits::KEY_BYTES_MAX + 1];
        assert!(refusal(&[key(&long, 1)], 1, 0).contains("key \"kkkk"));
        assert!(refusal(&[key(b"vault/bad name/k", 1)], 1, 0).contains("vault name"));
        let big = crate::limits::VALUE_BYTES_MAX + 1;
        assert!(refusal(&[key(b"a", big)], 1, 0).contains("value"));
        let lease = Record::Lease {
            id: 7,
            lease: LeaseRecord {
                ttl_ms: 0,
                granted_at_ms: 1,
                deadline_ms: 1,
            },
        };
        assert!(refusal(&[lease], 0, 1).contains("lease 7"));
        let mut auth = crate::api::AuthState::default();
        let client = iroh::SecretKey::from_bytes(&[1; 32]).public();
        auth.clients.insert(client, ["ghost".to_string()].into());
        let refused = refusal(&[Record::Auth(auth)], 0, 0);
        assert!(
            refused.contains("auth state") && refused.contains("ghost"),
            "{refused}"
        );
    }
}
