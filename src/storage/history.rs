//! History, as etcd's MVCC keeps it: every change readers saw (a put, a delete, an expiry
//! or a revoked lease's keys) is one `HISTORY` row under its revision, written in the
//! transaction that applied it, with the key's record after it and the live record it
//! replaced. A key's state at revision `r` (from the floor on) is the record its first event
//! after `r` replaced; without one, its current record. That rule needs nothing from before
//! `r`, so history can start at any revision (a new file, an upgraded one, a snapshot
//! installed: the floor is then that revision) and be compacted by dropping rows below a
//! revision; and one append-only table is all a write adds (no index by key: a read at a
//! revision looks at the events since it, as etcd's does). `HistoryBounds` says what is
//! kept: the state from its `floor` on, the events from its `events_from` on (where a watch
//! can start). The writing side is `HistoryWriter` (one per apply transaction); the reading
//! side is `ReadView`'s `get_at`, `range_at` and `events`, at the end of this file.
//!
//! Long because writing and reading the history must agree on one rule, kept in one file.

use std::collections::BTreeMap;

use redb::{ReadableTable, Table, WriteTransaction};

use crate::api::error::CommandError;
use crate::api::{KeyRange, KeyValue};
use crate::limits::SCAN_ENTRIES_MAX;
use crate::storage::codec::{decode_kv_entry, read_meta, read_meta_in, write_meta};
use crate::storage::error::{Error, Result};
use crate::storage::reads::{Page, ReadView, ScanOptions};
use crate::storage::schema::{HISTORY, HISTORY_BOUNDS};
use crate::storage::types::{HistoryBounds, HistoryEvent, KvEntry};

/// Checks that the state at `revision` can be read, given the bounds and the current
/// revision.
pub(crate) fn check_revision(
    revision: u64,
    bounds: Option<HistoryBounds>,
    current: u64,
) -> std::result::Result<(), CommandError> {
    if revision > current {
        return Err(CommandError::FutureRevision { revision, current });
    }
    let oldest = bounds.map_or(current, |bounds| bounds.floor);
    if revision < oldest {
        return Err(CommandError::Compacted { revision, oldest });
    }
    Ok(())
}

/// The first revision a watch can start from: every event from there on is kept.
pub(crate) fn events_from(bounds: Option<HistoryBounds>, current: u64) -> u64 {
    bounds.map_or(current.saturating_add(1), |bounds| bounds.events_from)
}

/// [`HistoryEvent`] borrowed, for writing: the same encoding, without copying the records.
#[derive(serde::Serialize)]
struct HistoryEventRef<'a> {
    #[serde(with = "serde_bytes")]
    key: &'a [u8],
    entry: Option<&'a KvEntry>,
    prev: Option<&'a KvEntry>,
}

/// The history tables of one write transaction.
pub(crate) struct HistoryWriter<'txn> {
    events: Table<'txn, (u64, u32), &'static [u8]>,
    /// The revision of the last event recorded here and its number within the revision.
    last: Option<(u64, u32)>,
    /// `HISTORY_BOUNDS` as stored, or as they are to be written.
    bounds: Option<HistoryBounds>,
    bounds_changed: bool,
    /// Whether the bounds came from a snapshot or backup being loaded.
    restored: bool,
}

impl<'txn> HistoryWriter<'txn> {
    pub(crate) fn open(txn: &'txn WriteTransaction) -> Result<Self> {
        Ok(HistoryWriter {
            events: txn.open_table(HISTORY)?,
            last: None,
            bounds: read_meta_in(txn, HISTORY_BOUNDS)?,
            bounds_changed: false,
            restored: false,
        })
    }

    /// Records a change of `key` at `revision`: `entry` after it (`None`: deleted), `prev` the
    /// live record it replaced. A command's events share its revision and are numbered in the
    /// order they happened (a command never spans two transactions).
    pub(crate) fn record(
        &mut self,
        revision: u64,
        key: &[u8],
        entry: Option<&KvEntry>,
        prev: Option<&KvEntry>,
    ) -> Result<()> {
        if self.bounds.is_none() {
            // The first change this file records: the state before it is the current one.
            self.bounds = Some(HistoryBounds::starting_at(revision.saturating_sub(1)));
            self.bounds_changed = true;
        }
        let number = match self.last {
            Some((last, number)) if last == revision => number + 1,
            _ => 0,
        };
        self.last = Some((revision, number));
        let event = HistoryEventRef { key, entry, prev };
        let bytes =
            postcard::to_allocvec(&event).map_err(|e| Error::corrupt("history event", e))?;
        self.events.insert((revision, number), bytes.as_slice())?;
        Ok(())
    }

    /// Drops the events before `revision` (etcd's compaction): the state at `revision` and
    /// later still reads the same (an event after it keeps the record it replaced), and a
    /// watch can start at `revision`. Refused below the floor and past `current`.
    pub(crate) fn compact(
        &mut self,
        revision: u64,
        current: u64,
    ) -> Result<std::result::Result<(), CommandError>> {
        if let Err(refused) = check_revision(revision, self.bounds, current) {
            return Ok(Err(refused));
        }
        self.events.retain_in((0, 0)..(revision, 0), |_, _| false)?;
        // No bounds yet: the history starts at the current revision (its events not kept).
        let kept = self.bounds.unwrap_or(HistoryBounds::starting_at(current));
        let events_from = kept.events_from;
        self.bounds = Some(HistoryBounds {
            floor: revision,
            events_from: events_from.max(revision),
        });
        self.bounds_changed = true;
        Ok(Ok(()))
    }

    /// Inserts an event as read from a snapshot or backup.
    pub(crate) fn restore(
        &mut self,
        revision: u64,
        number: u32,
        event: &HistoryEvent,
    ) -> Result<()> {
        let bytes = postcard::to_allocvec(event).map_err(|e| Error::corrupt("history event", e))?;
        self.events.insert((revision, number), bytes.as_slice())?;
        Ok(())
    }

    /// The bounds read from a snapshot or backup being loaded.
    pub(crate) fn restore_bounds(&mut self, bounds: HistoryBounds) {
        self.bounds = Some(bounds);
        self.bounds_changed = true;
        self.restored = true;
    }

    /// A state loaded at `revision` (the tables were emptied) whose file named no bounds (one
    /// from before history) has its history start there.
    pub(crate) fn start_unless_restored(&mut self, revision: u64) {
        if !self.restored {
            self.bounds = Some(HistoryBounds::starting_at(revision));
            self.bounds_changed = true;
        }
    }

    /// Writes the bounds if they changed.
    pub(crate) fn save(&self, txn: &WriteTransaction) -> Result<()> {
        match (self.bounds_changed, self.bounds) {
            (true, Some(bounds)) => write_meta(txn, HISTORY_BOUNDS, &bounds),
            _ => Ok(()),
        }
    }
}

/// The key of an encoded `HistoryEvent`, read without decoding the rest (postcard writes the
/// key first: its length as a varint, then its bytes).
fn event_key(bytes: &[u8]) -> Option<&[u8]> {
    let (mut len, mut shift, mut at) = (0usize, 0u32, 0usize);
    loop {
        let byte = *bytes.get(at)?;
        len |= usize::from(byte & 0x7f).checked_shl(shift)?;
        at += 1;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    bytes.get(at..at.checked_add(len)?)
}

/// [`event_key`], or the damage named.
pub(crate) fn stored_event_key(revision: u64, number: u32, bytes: &[u8]) -> Result<&[u8]> {
    event_key(bytes).ok_or_else(|| {
        Error::corrupt(
            format!("history event {revision}.{number}"),
            "no key at its start",
        )
    })
}

pub(crate) fn decode_event(revision: u64, number: u32, bytes: &[u8]) -> Result<HistoryEvent> {
    postcard::from_bytes(bytes)
        .map_err(|e| Error::corrupt(format!("history event {revision}.{number}"), e))
}

/// The records keys in `range` had at `revision`, for the keys changed since (the record
/// their first later event replaced: `None` where they were absent or expired). Keys not in
/// it have their current record.
pub(crate) fn changed_since(
    events: &impl ReadableTable<(u64, u32), &'static [u8]>,
    range: &KeyRange,
    revision: u64,
) -> Result<BTreeMap<Vec<u8>, Option<KvEntry>>> {
    let mut changed = BTreeMap::new();
    let Some(after) = revision.checked_add(1) else {
        return Ok(changed);
    };
    for item in events.range((after, 0)..)? {
        let (at, bytes) = item?;
        let (at_revision, number) = at.value();
        let bytes = bytes.value();
        let key = stored_event_key(at_revision, number, bytes)?;
        if range.contains(key) && !changed.contains_key(key) {
            let event = decode_event(at_revision, number, bytes)?;
            changed.insert(event.key, event.prev);
        }
    }
    Ok(changed)
}

/// A key's record at `revision` (stored, live or not), from the history and the current
/// `kv` table; `revision` must be at or above the floor.
pub(crate) fn entry_at(
    events: &impl ReadableTable<(u64, u32), &'static [u8]>,
    kv: &impl ReadableTable<&'static [u8], &'static [u8]>,
    key: &[u8],
    revision: u64,
) -> Result<Option<KvEntry>> {
    if let Some(after) = revision.checked_add(1) {
        for item in events.range((after, 0)..)? {
            let (at, bytes) = item?;
            if event_key(bytes.value()) == Some(key) {
                let (at_revision, number) = at.value();
                return Ok(decode_event(at_revision, number, bytes.value())?.prev);
            }
        }
    }
    match kv.get(key)? {
        Some(bytes) => Ok(Some(decode_kv_entry(key, bytes.value())?)),
        None => Ok(None),
    }
}

/// A record read at a revision, as readers see it at `now_ms` (`None`: absent or expired).
pub(crate) fn live(entry: Option<KvEntry>, key: &[u8], now_ms: u64) -> Option<KeyValue> {
    entry
        .filter(|entry| entry.is_live(now_ms))
        .map(|entry| entry.into_key_value(key.to_vec()))
}

/// A history event as a watch of `range` with `options` delivers it, if it does.
pub(crate) fn watch_event(
    revision: u64,
    event: HistoryEvent,
    range: &KeyRange,
    options: crate::api::WatchOptions,
) -> Option<crate::api::WatchEvent> {
    use crate::api::EventKind;
    if !range.contains(&event.key) {
        return None;
    }
    let kind = match event.entry {
        Some(_) => EventKind::Put,
        None => EventKind::Delete,
    };
    if !options.filter.admits(kind) {
        return None;
    }
    let key = event.key;
    Some(crate::api::WatchEvent {
        revision,
        kind,
        kv: event.entry.map(|entry| entry.into_key_value(key.clone())),
        prev: event
            .prev
            .filter(|_| options.prev_kv)
            .map(|prev| prev.into_key_value(key.clone())),
        key,
    })
}

/// Reads of the state at a revision and of the events since one: the history's side of a
/// [`ReadView`].
impl ReadView {
    /// The oldest revision the state can be read at (`get_at`, `range_at`).
    pub fn history_floor(&self) -> Result<u64> {
        Ok(read_meta(&self.txn, HISTORY_BOUNDS)?.map_or(self.revision, |bounds| bounds.floor))
    }

    /// The history's bounds as stored (`None`: no history yet).
    pub fn history_bounds(&self) -> Result<Option<crate::storage::HistoryBounds>> {
        read_meta(&self.txn, HISTORY_BOUNDS)
    }

    /// The first revision a watch can start from (every event from there on is kept).
    pub fn events_from(&self) -> Result<u64> {
        Ok(events_from(self.history_bounds()?, self.revision))
    }

    /// A key's record as of `revision`, as readers see it now (expiry judged at this view's
    /// instant); refused below the history floor and above the current revision.
    pub fn get_at(
        &self,
        key: &[u8],
        revision: u64,
    ) -> Result<std::result::Result<Option<KeyValue>, CommandError>> {
        if let Err(refused) = self.check_revision(revision)? {
            return Ok(Err(refused));
        }
        let events = self.txn.open_table(HISTORY)?;
        let entry = entry_at(&events, &self.kv, key, revision)?;
        Ok(Ok(live(entry, key, self.now_ms)))
    }

    /// As [`ReadView::range`], with the state as of `revision` (the page's revision is
    /// `revision`).
    pub fn range_at(
        &self,
        range: &KeyRange,
        options: ScanOptions,
        revision: u64,
    ) -> Result<std::result::Result<Page, CommandError>> {
        if let Err(refused) = self.check_revision(revision)? {
            return Ok(Err(refused));
        }
        let events = self.txn.open_table(HISTORY)?;
        let limit = options.limit.clamp(1, SCAN_ENTRIES_MAX);
        let mut kvs: Vec<KeyValue> = Vec::new();
        let mut continuation = None;
        let mut page_bytes = 0usize;
        // The keys changed since `revision` with the records they had then, merged in key
        // order with the current records of the others.
        let mut changed = changed_since(&events, range, revision)?
            .into_iter()
            .peekable();
        let mut current = self.kv_range(range)?;
        let mut next_current = current.next().transpose()?;
        loop {
            let from_history = match (&next_current, changed.peek()) {
                (None, None) => break,
                (Some((key, _)), Some((changed_key, _))) => changed_key.as_slice() <= key.value(),
                (None, Some(_)) => true,
                (Some(_), None) => false,
            };
            let (key, entry) = if from_history {
                let (key, entry) = changed.next().expect("peeked");
                if next_current
                    .as_ref()
                    .is_some_and(|(current_key, _)| current_key.value() == key.as_slice())
                {
                    next_current = current.next().transpose()?;
                }
                (key, entry)
            } else {
                let (key, bytes) = next_current.take().expect("matched");
                let key = key.value().to_vec();
                let entry = decode_kv_entry(&key, bytes.value())?;
                next_current = current.next().transpose()?;
                (key, Some(entry))
            };
            let Some(mut kv) = live(entry, &key, self.now_ms) else {
                continue;
            };
            if kvs.len() == limit {
                continuation = Some(key);
                break;
            }
            if options.keys_only {
                kv.value.clear();
            }
            page_bytes = page_bytes.saturating_add(kv.key.len() + kv.value.len());
            if !kvs.is_empty() && page_bytes > options.bytes_max {
                continuation = Some(key);
                break;
            }
            kvs.push(kv);
        }
        Ok(Ok(Page {
            kvs,
            continuation,
            revision,
        }))
    }

    /// The events of keys in `range` from revision `from` on, as a watch delivers them: whole
    /// revisions in order, stopping at the first revision boundary after `max` events or
    /// `max_bytes` of keys and values (or after `max * 16` rows looked at). Returns them and the revision to go on from (past
    /// the current revision once every kept event was looked at). Refused when events from
    /// `from` are no longer kept.
    pub fn events(
        &self,
        from: u64,
        range: &KeyRange,
        options: crate::api::WatchOptions,
        max: usize,
        max_bytes: usize,
    ) -> Result<std::result::Result<(Vec<crate::api::WatchEvent>, u64), CommandError>> {
        let oldest = self.events_from()?;
        if from < oldest {
            return Ok(Err(CommandError::Compacted {
                revision: from,
                oldest,
            }));
        }
        let table = self.txn.open_table(HISTORY)?;
        let mut events = Vec::new();
        let (mut looked_at, mut held, mut last) = (0usize, 0usize, None);
        for item in table.range((from, 0)..)? {
            let (at, bytes) = item?;
            let (revision, number) = at.value();
            if last != Some(revision)
                && (events.len() >= max || held >= max_bytes || looked_at >= max * 16)
            {
                return Ok(Ok((events, revision)));
            }
            last = Some(revision);
            looked_at += 1;
            // Only the events of the range are decoded whole.
            if !range.contains(stored_event_key(revision, number, bytes.value())?) {
                continue;
            }
            let event = decode_event(revision, number, bytes.value())?;
            if let Some(event) = watch_event(revision, event, range, options) {
                let values = event.kv.iter().chain(&event.prev);
                held += event.key.len() + values.map(|kv| kv.value.len()).sum::<usize>();
                events.push(event);
            }
        }
        Ok(Ok((events, from.max(self.revision.saturating_add(1)))))
    }

    /// Every history event in revision order, for snapshots and backups.
    pub(crate) fn raw_history(
        &self,
    ) -> Result<impl Iterator<Item = Result<(u64, u32, crate::storage::HistoryEvent)>>> {
        let events = self.txn.open_table(HISTORY)?;
        Ok(events.range::<(u64, u32)>(..)?.map(|item| {
            let (at, bytes) = item?;
            let (revision, number) = at.value();
            Ok((
                revision,
                number,
                decode_event(revision, number, bytes.value())?,
            ))
        }))
    }

    fn check_revision(&self, revision: u64) -> Result<std::result::Result<(), CommandError>> {
        let bounds = read_meta(&self.txn, HISTORY_BOUNDS)?;
        Ok(check_revision(revision, bounds, self.revision))
    }
}
