//! Snapshot files: built by streaming one read transaction to a file, installed atomically
//! from one. Memory stays bounded: one record at a time, whatever the size of the state.
//!
//! Format (all integers little endian):
//! `MAGIC`, then records, each a `u32` length and a postcard [`Record`]: one `Header`, the
//! `Key`s in key order, the `Lease`s in id order, and one `End` carrying the counts and the
//! CRC-32 of every byte before it. Indexes are not stored: installing rebuilds them.
//!
//! The current snapshot is `snapshots/current.snap`, replaced by an atomic rename. Installing
//! commits the state with fsync before the rename: a crash between the two leaves the previous
//! current snapshot, older than the state but still a valid committed state to send.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use redb::Durability;
use serde::{Deserialize, Serialize};

use crate::limits::SNAPSHOT_RECORD_BYTES_MAX;
use crate::storage::error::{Error, Result};
use crate::storage::schema::*;
use crate::storage::state_machine::FIRST_LEASE_ID;
use crate::storage::state_machine::Machine;
use crate::storage::store::{Store, read_meta, read_meta_in, write_meta, write_meta_opt};
use crate::storage::types::{KvEntry, LeaseRecord, LogId, SnapshotMeta};

const MAGIC: &[u8; 8] = b"ASPNSNAP";
const SNAPSHOT_FORMAT: u32 = 1;
const CURRENT_FILE: &str = "current.snap";

#[derive(Debug, Serialize, Deserialize)]
enum Record {
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

    /// Writes the state machine, as of one read transaction, to a new current snapshot file.
    pub fn build_snapshot(&self) -> Result<(SnapshotMeta, File)> {
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
        let mut writer = RecordWriter::new(BufWriter::new(tmp.as_file()));
        writer.write_magic()?;
        writer.record(&Record::Header {
            format: SNAPSHOT_FORMAT,
            meta: meta.clone(),
            revision,
            next_lease_id,
        })?;
        let (mut keys, mut leases) = (0, 0);
        for item in view.raw_entries()? {
            let (key, entry) = item?;
            writer.record(&Record::Key { key, entry })?;
            keys += 1;
        }
        for item in view.raw_leases()? {
            let (id, lease) = item?;
            writer.record(&Record::Lease { id, lease })?;
            leases += 1;
        }
        writer.finish(keys, leases)?;
        drop(writer);
        drop(view);

        let path = self.current_snapshot_path();
        tmp.as_file()
            .sync_all()
            .map_err(|e| Error::io("syncing a snapshot file", e))?;
        tmp.persist(&path)
            .map_err(|e| Error::io(format!("renaming to {}", path.display()), e.error))?;
        sync_dir(self.snapshot_dir())?;
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
        let mut reader = RecordReader::new(BufReader::new(&mut file));
        reader.read_magic()?;
        let header = read_header(&mut reader)?;
        drop(reader);
        file.seek(SeekFrom::Start(0))
            .map_err(|e| Error::io("rewinding the snapshot file", e))?;
        Ok(Some((header.meta, file)))
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
    pub fn install_snapshot(
        &self,
        meta: &SnapshotMeta,
        file: &mut File,
    ) -> Result<SnapshotSummary> {
        file.seek(SeekFrom::Start(0))
            .map_err(|e| Error::io("rewinding the received snapshot", e))?;
        let copy = tempfile::NamedTempFile::new_in(self.snapshot_dir())
            .map_err(|e| Error::io("creating a snapshot file", e))?;
        let mut reader = RecordReader::new(BufReader::new(file));
        let mut tee = RecordWriter::new(BufWriter::new(copy.as_file()));
        reader.read_magic()?;
        tee.write_magic()?;

        let txn = self.begin_write(Durability::Immediate)?;
        txn.delete_table(KV)?;
        txn.delete_table(SM_META)?;
        txn.delete_table(LEASES)?;
        txn.delete_table(IDX_EXPIRES)?;
        txn.delete_table(IDX_LEASE)?;
        txn.delete_table(IDX_LEASE_DEADLINE)?;
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
        drop(machine);
        write_meta_opt(&txn, LAST_APPLIED, meta.last_log_id.as_ref())?;
        write_meta(&txn, MEMBERSHIP, &meta.last_membership)?;
        let raised = read_meta_in(&txn, COMMITTED)?.max(meta.last_log_id);
        write_meta_opt(&txn, COMMITTED, raised.as_ref())?;
        write_meta_opt(&txn, SNAPSHOT_INSTALLED, meta.last_log_id.as_ref())?;
        tee.flush()?;
        drop(tee);
        copy.as_file()
            .sync_all()
            .map_err(|e| Error::io("syncing a snapshot file", e))?;
        txn.commit()?;
        let path = self.current_snapshot_path();
        copy.persist(&path)
            .map_err(|e| Error::io(format!("renaming to {}", path.display()), e.error))?;
        sync_dir(self.snapshot_dir())?;
        Ok(summary)
    }
}

/// Reads a whole snapshot file and checks its framing and checksum, without installing it.
pub fn verify_snapshot_file(file: &mut File) -> Result<SnapshotSummary> {
    file.seek(SeekFrom::Start(0))
        .map_err(|e| Error::io("rewinding the snapshot", e))?;
    let mut reader = RecordReader::new(BufReader::new(file));
    reader.read_magic()?;
    let header = read_header(&mut reader)?;
    let (mut keys, mut leases) = (0, 0);
    loop {
        match reader.record()? {
            Record::Key { .. } => keys += 1,
            Record::Lease { .. } => leases += 1,
            Record::End { .. } => {
                return finish_check(&mut reader, header, keys, leases);
            }
            Record::Header { .. } => return Err(Error::corrupt("snapshot", "second header")),
        }
    }
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
            "snapshot",
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
    let (mut keys, mut leases) = (0u64, 0u64);
    let mut previous_key: Option<Vec<u8>> = None;
    loop {
        let record = reader.record()?;
        match &record {
            Record::Key { key, entry } => {
                if previous_key
                    .as_deref()
                    .is_some_and(|prev| prev >= key.as_slice())
                {
                    return Err(Error::corrupt("snapshot", "keys out of order"));
                }
                machine.restore_key(key, entry)?;
                previous_key = Some(key.clone());
                keys += 1;
            }
            Record::Lease { id, lease } => {
                machine.restore_lease(*id, lease)?;
                leases += 1;
            }
            Record::End { .. } => {
                let summary = finish_check(reader, header, keys, leases)?;
                tee.finish(keys, leases)?;
                return Ok(summary);
            }
            Record::Header { .. } => return Err(Error::corrupt("snapshot", "second header")),
        }
        tee.record(&record)?;
    }
}

/// Checks the `End` record just read against the counts and the checksum of what preceded it.
fn finish_check<R: Read>(
    reader: &mut RecordReader<R>,
    header: Header,
    keys: u64,
    leases: u64,
) -> Result<SnapshotSummary> {
    let Some(Record::End {
        keys: end_keys,
        leases: end_leases,
        crc32,
    }) = reader.last_end.take()
    else {
        return Err(Error::corrupt("snapshot", "missing end record"));
    };
    if crc32 != reader.crc_before_last {
        return Err(Error::corrupt(
            "snapshot",
            format!(
                "checksum {:08x} does not match the content ({:08x})",
                crc32, reader.crc_before_last
            ),
        ));
    }
    if (end_keys, end_leases) != (keys, leases) {
        return Err(Error::corrupt(
            "snapshot",
            format!("end says {end_keys} keys and {end_leases} leases, found {keys} and {leases}"),
        ));
    }
    let mut extra = [0u8; 1];
    if reader
        .inner
        .read(&mut extra)
        .map_err(|e| Error::io("reading the snapshot", e))?
        != 0
    {
        return Err(Error::corrupt("snapshot", "bytes after the end record"));
    }
    Ok(SnapshotSummary {
        meta: header.meta,
        revision: header.revision,
        keys,
        leases,
    })
}

struct RecordWriter<W: Write> {
    inner: W,
    crc: crc32fast::Hasher,
    buffer: Vec<u8>,
}

impl<W: Write> RecordWriter<W> {
    fn new(inner: W) -> Self {
        RecordWriter {
            inner,
            crc: crc32fast::Hasher::new(),
            buffer: Vec::new(),
        }
    }

    fn bytes(&mut self, bytes: &[u8]) -> Result<()> {
        self.crc.update(bytes);
        self.inner
            .write_all(bytes)
            .map_err(|e| Error::io("writing a snapshot", e))
    }

    fn write_magic(&mut self) -> Result<()> {
        self.bytes(MAGIC)
    }

    fn record(&mut self, record: &Record) -> Result<()> {
        self.buffer.clear();
        let encoded = postcard::to_extend(record, std::mem::take(&mut self.buffer))
            .map_err(|e| Error::corrupt("snapshot record", e))?;
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
        self.inner
            .flush()
            .map_err(|e| Error::io("writing a snapshot", e))
    }
}

struct RecordReader<R: Read> {
    inner: R,
    crc: crc32fast::Hasher,
    /// The CRC of every byte before the last record read (what an `End` record carries).
    crc_before_last: u32,
    last_end: Option<Record>,
    buffer: Vec<u8>,
}

impl<R: Read> RecordReader<R> {
    fn new(inner: R) -> Self {
        RecordReader {
            inner,
            crc: crc32fast::Hasher::new(),
            crc_before_last: 0,
            last_end: None,
            buffer: Vec::new(),
        }
    }

    fn exact(&mut self, len: usize) -> Result<()> {
        self.buffer.resize(len, 0);
        self.inner.read_exact(&mut self.buffer).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::corrupt("snapshot", "truncated")
            } else {
                Error::io("reading a snapshot", e)
            }
        })?;
        self.crc.update(&self.buffer);
        Ok(())
    }

    fn read_magic(&mut self) -> Result<()> {
        self.exact(MAGIC.len())?;
        if self.buffer != MAGIC {
            return Err(Error::corrupt(
                "snapshot",
                "not an Aspen snapshot (bad magic)",
            ));
        }
        Ok(())
    }

    fn record(&mut self) -> Result<Record> {
        self.crc_before_last = self.crc.clone().finalize();
        self.exact(4)?;
        let len = u32::from_le_bytes(self.buffer[..4].try_into().expect("4 bytes")) as usize;
        if len > SNAPSHOT_RECORD_BYTES_MAX {
            return Err(Error::corrupt(
                "snapshot",
                format!("record of {len} bytes exceeds the limit of {SNAPSHOT_RECORD_BYTES_MAX}"),
            ));
        }
        self.exact(len)?;
        let record: Record =
            postcard::from_bytes(&self.buffer).map_err(|e| Error::corrupt("snapshot record", e))?;
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
