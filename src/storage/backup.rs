//! Backups: the whole key-value state (keys with their revisions, versions and TTLs, leases,
//! vaults with their metadata and limits, the revision and lease-id counters) as of one redb
//! read transaction, written while writes go on. A backup holds no Raft log id and no
//! membership: it seeds a new cluster.
//!
//! Format: the snapshot record stream (`snapshot.rs`) under its own magic `ASPNBKUP`, with a
//! `Backup` header (format, revision, key and lease counts) first and the CRC-32 of every
//! byte in the closing `End` record. Reading checks the magic, the format, key order, the
//! counts in the header and in `End`, the checksum, and that nothing follows.
//!
//! Restoring verifies the whole file before it creates anything, then writes the state into a
//! new data directory in one transaction committed with fsync.
//!
//! etcd's snapshot form ([`EtcdSnapshotTrailer`]), what etcd's Maintenance.Snapshot streams
//! and `etcdctl snapshot save` checks: the backup, then zero bytes and the backup's length
//! (u64 little-endian) up to a multiple of 512 bytes, then the SHA-256 of all that. Restoring
//! reads either form.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::Path;

use redb::{Durability, ReadableTableMetadata};
use serde::Serialize;

use crate::storage::codec::{read_meta, write_meta};
use crate::storage::error::{Error, Result};
use crate::storage::schema::*;
use crate::storage::snapshot::{BackupHeader, Record, RecordReader, RecordWriter, load_body};
use crate::storage::state_machine::{FIRST_LEASE_ID, Machine};
use crate::storage::store::{DB_FILE_NAME, SNAPSHOT_DIR_NAME, Store, StoreOptions};

const BACKUP_MAGIC: &[u8; 8] = b"ASPNBKUP";
/// Version of the backup format this build writes and reads.
pub const BACKUP_FORMAT: u32 = 1;
const BACKUP: &str = "backup";
/// etcd's snapshot files are a multiple of this many bytes, then a SHA-256.
const ETCD_SNAPSHOT_ALIGN: u64 = 512;
const SHA256_BYTES: u64 = 32;

/// Ends a backup in etcd's snapshot form (see the module docs): give it every byte of the
/// backup as it is sent, then send what [`EtcdSnapshotTrailer::finish`] returns.
#[derive(Default)]
pub struct EtcdSnapshotTrailer {
    hasher: sha2::Sha256,
    len: u64,
}

impl EtcdSnapshotTrailer {
    pub fn update(&mut self, bytes: &[u8]) {
        sha2::Digest::update(&mut self.hasher, bytes);
        self.len += bytes.len() as u64;
    }

    /// The padding, the backup's length and the SHA-256.
    pub fn finish(mut self) -> Vec<u8> {
        let backup_len = self.len;
        let unpadded = backup_len + 8;
        let padding = (ETCD_SNAPSHOT_ALIGN - unpadded % ETCD_SNAPSHOT_ALIGN) % ETCD_SNAPSHOT_ALIGN;
        let mut tail = vec![0u8; padding as usize];
        tail.extend_from_slice(&backup_len.to_le_bytes());
        self.update(&tail);
        tail.extend_from_slice(&sha2::Digest::finalize(self.hasher));
        tail
    }
}

/// The backup at `path`, in either form: a plain backup whole, or the backup inside etcd's
/// snapshot form once its SHA-256, length and padding check out.
fn open_backup(path: &Path) -> Result<std::io::Take<BufReader<File>>> {
    let what = || format!("reading {}", path.display());
    let mut file =
        File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let len = file.metadata().map_err(|e| Error::io(what(), e))?.len();
    let mut body = len;
    if len % ETCD_SNAPSHOT_ALIGN == SHA256_BYTES && len >= ETCD_SNAPSHOT_ALIGN + SHA256_BYTES {
        if let Some(backup_len) =
            etcd_snapshot_body(&mut file, len).map_err(|e| Error::io(what(), e))?
        {
            body = backup_len;
        }
        std::io::Seek::rewind(&mut file).map_err(|e| Error::io(what(), e))?;
    }
    Ok(BufReader::new(file).take(body))
}

/// The length of the backup inside an etcd snapshot file of `len` bytes, or `None` when it is
/// not one (its SHA-256, length or padding do not check out).
fn etcd_snapshot_body(file: &mut File, len: u64) -> std::io::Result<Option<u64>> {
    use sha2::Digest;
    let hashed = len - SHA256_BYTES;
    let mut hasher = sha2::Sha256::new();
    let mut reader = BufReader::new(&mut *file).take(hashed);
    // The last 512 bytes hashed hold the padding and the length.
    let mut last = Vec::with_capacity(ETCD_SNAPSHOT_ALIGN as usize);
    let mut buffer = vec![0u8; 64 << 10];
    let mut read = 0u64;
    loop {
        let n = reader.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        read += n as u64;
        let keep = (read.min(ETCD_SNAPSHOT_ALIGN)) as usize;
        last.extend_from_slice(&buffer[..n]);
        let excess = last.len() - keep;
        last.drain(..excess);
    }
    let mut sha = [0u8; SHA256_BYTES as usize];
    reader.into_inner().read_exact(&mut sha)?;
    if read != hashed || hasher.finalize().as_slice() != sha {
        return Ok(None);
    }
    let (padding, length) = last.split_at(last.len() - 8);
    let backup_len = u64::from_le_bytes(length.try_into().expect("8 bytes"));
    // The length is the file's word: it may claim anything.
    let Some(padded) = backup_len
        .checked_add(8)
        .and_then(|unpadded| hashed.checked_sub(unpadded))
    else {
        return Ok(None);
    };
    let zeros = &padding[padding.len().saturating_sub(padded as usize)..];
    Ok((padded < ETCD_SNAPSHOT_ALIGN && zeros.iter().all(|b| *b == 0)).then_some(backup_len))
}

/// What a backup holds (once fully read and checked) or held when it was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupSummary {
    pub revision: u64,
    pub keys: u64,
    pub leases: u64,
    pub created_at_ms: u64,
}

impl BackupSummary {
    fn of(header: &BackupHeader) -> Self {
        BackupSummary {
            revision: header.revision,
            keys: header.keys,
            leases: header.leases,
            created_at_ms: header.created_at_ms,
        }
    }
}

impl Store {
    /// Writes a backup of the state as of one read transaction to `out`; `progress` gets the
    /// keys written so far and the total. Writes may run meanwhile: they are not in it.
    pub fn write_backup<W: Write>(
        &self,
        out: W,
        created_at_ms: u64,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<(BackupSummary, W)> {
        let txn = self.begin_read()?;
        let header = BackupHeader {
            format: BACKUP_FORMAT,
            revision: read_meta(&txn, REVISION)?.unwrap_or(0),
            next_lease_id: read_meta(&txn, NEXT_LEASE_ID)?.unwrap_or(FIRST_LEASE_ID),
            keys: txn.open_table(KV)?.len()?,
            leases: txn.open_table(LEASES)?.len()?,
            created_at_ms,
        };
        let view = crate::storage::reads::ReadView::new(txn, 0)?;
        let mut writer = RecordWriter::new(out, BACKUP);
        writer.write_magic(BACKUP_MAGIC)?;
        writer.record(&Record::Backup(header.clone()))?;
        let total = header.keys;
        crate::storage::snapshot::write_state(&view, &mut writer, |keys| progress(keys, total))?;
        Ok((BackupSummary::of(&header), writer.into_inner()))
    }
}

/// Reads a whole backup and checks it (see the module docs) without restoring anything;
/// `progress` gets the keys read so far and the header's total.
pub fn verify_backup<R: Read>(input: R, progress: impl FnMut(u64, u64)) -> Result<BackupSummary> {
    read_backup(input, progress, |_| Ok(())).map(|header| BackupSummary::of(&header))
}

fn read_backup<R: Read>(
    input: R,
    mut progress: impl FnMut(u64, u64),
    mut each: impl FnMut(&Record) -> Result<()>,
) -> Result<BackupHeader> {
    let mut reader = RecordReader::new(input, BACKUP);
    reader.read_magic(BACKUP_MAGIC)?;
    let header = match reader.record()? {
        Record::Backup(header) if header.format == BACKUP_FORMAT => header,
        Record::Backup(header) => {
            return Err(Error::corrupt(
                BACKUP,
                format!(
                    "format {} is not this build's format {BACKUP_FORMAT}",
                    header.format
                ),
            ));
        }
        _ => {
            return Err(Error::corrupt(
                BACKUP,
                "does not start with a backup header",
            ));
        }
    };
    let mut keys = 0u64;
    let (found_keys, found_leases) = load_body(&mut reader, None, |record| {
        if matches!(record, Record::Key { .. }) {
            keys += 1;
            if keys.is_multiple_of(1024) {
                progress(keys, header.keys);
            }
        }
        each(record)
    })?;
    if (found_keys, found_leases) != (header.keys, header.leases) {
        return Err(Error::corrupt(
            BACKUP,
            format!(
                "header says {} keys and {} leases, found {found_keys} and {found_leases}",
                header.keys, header.leases
            ),
        ));
    }
    progress(found_keys, header.keys);
    Ok(header)
}

/// Creates the store of a new node in `dir` from the backup at `from`: the same keys (with
/// their revisions, versions and TTLs), leases and counters, so revisions continue from the
/// backup's. No Raft log and no membership: the node starts a cluster as a fresh one does.
/// Leases get at least their whole TTL from `now_ms` (as etcd does on restore), so the time
/// the cluster was down does not expire them.
///
/// Refuses a `dir` that already holds a store, and a file that does not check out, before it
/// writes anything.
pub fn restore_backup(
    from: &Path,
    dir: &Path,
    cache_bytes: usize,
    now_ms: u64,
) -> Result<BackupSummary> {
    let open = || open_backup(from);
    verify_backup(open()?, |_, _| {})?;
    if dir.join(DB_FILE_NAME).exists() {
        return Err(Error::Refused(format!(
            "{} already holds a store ({DB_FILE_NAME}): restore into a new data directory",
            dir.display()
        )));
    }
    let created_dir = !dir.exists();
    let created_snapshots = !dir.join(SNAPSHOT_DIR_NAME).exists();
    let result = write_restored(open()?, dir, cache_bytes, now_ms);
    if result.is_err() {
        // Leave nothing half-made behind, and remove only what this call created.
        let _ = std::fs::remove_file(dir.join(DB_FILE_NAME));
        if created_snapshots {
            let _ = std::fs::remove_dir_all(dir.join(SNAPSHOT_DIR_NAME));
        }
        if created_dir {
            let _ = std::fs::remove_dir(dir);
        }
    }
    result
}

fn write_restored<R: Read>(
    input: R,
    dir: &Path,
    cache_bytes: usize,
    now_ms: u64,
) -> Result<BackupSummary> {
    let options = StoreOptions {
        cache_bytes,
        ..StoreOptions::file(dir)
    };
    let store = Store::open(&options)?;
    let txn = store.begin_write(Durability::Immediate)?;
    let mut machine = Machine::open(&txn)?;
    let header = read_backup(
        input,
        |_, _| {},
        |record| match record {
            Record::Key { key, entry } => machine.restore_key(key, entry),
            Record::Lease { id, lease } => {
                let mut lease = *lease;
                lease.deadline_ms = lease.deadline_ms.max(now_ms.saturating_add(lease.ttl_ms));
                machine.restore_lease(*id, &lease)
            }
            Record::Vault { name, meta } => machine.restore_vault(name, meta),
            Record::VaultLimits(limits) => {
                machine.set_vault_limits(*limits);
                Ok(())
            }
            Record::Auth(auth) => {
                machine.set_auth(auth.clone());
                Ok(())
            }
            Record::Clock(clock_ms) => {
                machine.set_clock(*clock_ms);
                Ok(())
            }
            Record::HistoryBounds(bounds) => {
                machine.restore_history_bounds(*bounds);
                Ok(())
            }
            Record::History {
                revision,
                number,
                event,
            } => machine.restore_history(*revision, *number, event),
            Record::Header { .. } | Record::End { .. } | Record::Backup(_) => Ok(()),
        },
    )?;
    machine.set_counters(header.revision, header.next_lease_id);
    machine.save_meta(&txn)?;
    drop(machine);
    write_meta(&txn, RESTORED_FROM, &header.revision)?;
    txn.commit()?;
    store.close()?;
    Ok(BackupSummary::of(&header))
}
