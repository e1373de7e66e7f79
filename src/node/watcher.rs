//! Watches on this node. The live events are read from the history once per node, by the
//! [`WatchHub`]'s reader, which hands each batch to every running watch; a watch reads the
//! history itself only to replay it from its start revision and to catch up after it fell
//! behind the hub (a watcher that reads slowly). Each watch hands its batches to the client
//! service through a small bounded channel: a watcher that reads slowly fills it and its feed
//! waits, holding nothing more meanwhile (the hub's batches it misses are dropped once every
//! other watch took them), so its memory stays bounded; once it falls behind what the history
//! keeps (compaction) it is told so and ends.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};

use crate::api::{ClientError, ClientOutput, KeyRange, WatchEvent, WatchFilter, WatchOptions};
use crate::storage::Store;
use crate::sync::lock;

/// Batches a watch may have waiting for its client (4 batches of 1 MiB measured the same
/// node RSS under 100 watchers: docs/performance.md).
pub(crate) const WATCH_BATCHES_QUEUED: usize = 2;
/// Events per batch (a revision is never split: one may make it longer).
const WATCH_BATCH_EVENTS: usize = 256;
/// Bytes of keys and values per batch (likewise): with `WATCH_BATCHES_QUEUED`, what a watch
/// that is not read holds in memory, besides QUIC's stream window.
const WATCH_BATCH_BYTES: usize = 256 << 10;
/// The hub's batches not yet taken by every watch: a watch further behind catches up from
/// disk.
const HUB_BATCHES_QUEUED: usize = 16;

/// One frame of a watch: events (or none: progress) and the revision they bring the watcher
/// to; or why the watch ended.
pub type WatchFrame = Result<(ClientOutput, u64), ClientError>;

/// Every event of revisions `from..=to` (all keys, with their previous records), read once
/// for all the node's watches.
struct HubBatch {
    from: u64,
    to: u64,
    events: Vec<WatchEvent>,
}

/// The node's reader of live events (see the module docs). It runs while a watch listens,
/// and is started again by the next watch after it stopped.
pub(crate) struct WatchHub {
    store: Arc<Store>,
    /// The reader's channel while it runs.
    running: Arc<Mutex<Option<broadcast::Sender<Arc<HubBatch>>>>>,
}

impl WatchHub {
    pub(crate) fn new(store: Arc<Store>) -> Self {
        WatchHub {
            store,
            running: Arc::new(Mutex::new(None)),
        }
    }

    /// The batches the reader reads from now on; starts the reader when none runs.
    fn subscribe(&self) -> broadcast::Receiver<Arc<HubBatch>> {
        let mut running = lock(&self.running);
        if let Some(sender) = running.as_ref() {
            return sender.subscribe();
        }
        let (sender, receiver) = broadcast::channel(HUB_BATCHES_QUEUED);
        *running = Some(sender.clone());
        tokio::spawn(read_for_all(
            Arc::clone(&self.store),
            Arc::clone(&self.running),
            sender,
        ));
        receiver
    }
}

/// The hub's reader: after every change, reads the new events of every key and sends them to
/// the watches; stops (under the hub's lock, so no watch subscribes to a stopped reader) once
/// no watch listens, or on a storage error (each watch then reads from disk and meets it).
async fn read_for_all(
    store: Arc<Store>,
    running: Arc<Mutex<Option<broadcast::Sender<Arc<HubBatch>>>>>,
    sender: broadcast::Sender<Arc<HubBatch>>,
) {
    let stop = || {
        let mut running = lock(&running);
        if sender.receiver_count() == 0 {
            *running = None;
            true
        } else {
            false
        }
    };
    let mut changes = store.subscribe_changes();
    let all = KeyRange {
        start: Vec::new(),
        end: None,
    };
    let options = WatchOptions {
        filter: WatchFilter::All,
        prev_kv: true,
        progress_ms: 0,
    };
    let mut next = 0;
    loop {
        changes.borrow_and_update();
        // Reads until every applied revision was sent.
        loop {
            let read = read_events(&store, &all, next, options).await;
            let (events, after, revision) = match read {
                Ok(read) => read,
                // Compacted past the reader (it fell behind): it goes on where the history
                // does; the watches see the gap and read from disk, where they meet the
                // compaction themselves.
                Err(ClientError::Command(crate::api::error::CommandError::Compacted {
                    oldest,
                    ..
                })) => {
                    next = oldest;
                    continue;
                }
                Err(_) => {
                    lock(&running).take();
                    return;
                }
            };
            let from = match next {
                0 => after,
                from => from,
            };
            next = after;
            if after > from {
                let batch = HubBatch {
                    from,
                    to: after - 1,
                    events,
                };
                if sender.send(Arc::new(batch)).is_err() && stop() {
                    return;
                }
            }
            if after > revision {
                break;
            }
        }
        // Waits for a change, or for the last watch to end (the reader then lets the store
        // go: a node stopping waits for that).
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    lock(&running).take();
                    return;
                }
            }
            () = sender.closed() => {}
        }
        if stop() {
            return;
        }
    }
}

/// One read of the history on the blocking pool: the events of `range` from `from` (0: the
/// revision after the current one), the revision to go on from, and the current revision;
/// or the refusal (compacted) or failure (of the store or the read task) that ends a watch.
async fn read_events(
    store: &Arc<Store>,
    range: &KeyRange,
    from: u64,
    options: WatchOptions,
) -> Result<(Vec<WatchEvent>, u64, u64), ClientError> {
    let (store, range) = (Arc::clone(store), range.clone());
    let read = tokio::task::spawn_blocking(move || {
        let view = store.read(crate::clock::now_ms())?;
        let from = match from {
            0 => view.revision().saturating_add(1),
            from => from,
        };
        let events = view.events(from, &range, options, WATCH_BATCH_EVENTS, WATCH_BATCH_BYTES)?;
        Ok::<_, crate::storage::Error>((events, view.revision()))
    })
    .await;
    match read {
        Ok(Ok((Ok((events, after)), revision))) => Ok((events, after, revision)),
        Ok(Ok((Err(refused), _))) => Err(ClientError::Command(refused)),
        Ok(Err(error)) => Err(ClientError::Storage(error.to_string())),
        Err(join) => Err(ClientError::Storage(format!("watch read task: {join}"))),
    }
}

/// Whether the watch's client may still read its range (`Err`: why not), asked before each
/// frame: a role revoked or a client removed ends its watches at their next frame.
pub(crate) type StillAllowed = Box<dyn Fn() -> Result<(), ClientError> + Send + Sync>;

/// A watch's position and its way to the client.
struct Feed {
    store: Arc<Store>,
    range: KeyRange,
    options: WatchOptions,
    /// The revision to go on from (0 until the first read).
    next: u64,
    tx: mpsc::Sender<WatchFrame>,
    /// Whether the first frame (the watch is set up) went out.
    started: bool,
    /// `None`: auth is off.
    allowed: Option<StillAllowed>,
}

impl Feed {
    /// Sends a frame; false when the watcher is gone, or may no longer read the range (its
    /// last frame then says why).
    async fn send(&mut self, events: Vec<WatchEvent>, reached: u64) -> bool {
        if let Some(Err(denied)) = self.allowed.as_ref().map(|allowed| allowed()) {
            let _ = self.tx.send(Err(denied)).await;
            return false;
        }
        self.started = true;
        self.tx
            .send(Ok((ClientOutput::Watch(events), reached)))
            .await
            .is_ok()
    }

    /// Reads from disk until every applied revision was sent; false when the watch ended
    /// (its last frame then said why) or the watcher is gone.
    async fn catch_up(&mut self) -> bool {
        loop {
            let read = read_events(&self.store, &self.range, self.next, self.options).await;
            let (events, after, revision) = match read {
                Ok(read) => read,
                Err(error) => {
                    let _ = self.tx.send(Err(error)).await;
                    return false;
                }
            };
            self.next = after;
            // Every event before `next` was delivered (or is in this batch).
            let reached = after.saturating_sub(1).min(revision);
            if (!events.is_empty() || !self.started) && !self.send(events, reached).await {
                return false;
            }
            if after > revision {
                return true;
            }
        }
    }

    /// The events of a hub batch this watch delivers, from `next` on.
    fn select(&self, batch: &HubBatch) -> Vec<WatchEvent> {
        batch
            .events
            .iter()
            .filter(|event| {
                event.revision >= self.next
                    && self.range.contains(&event.key)
                    && self.options.filter.admits(event.kind)
            })
            .map(|event| WatchEvent {
                revision: event.revision,
                kind: event.kind,
                key: event.key.clone(),
                kv: event.kv.clone(),
                prev: event
                    .prev
                    .as_ref()
                    .filter(|_| self.options.prev_kv)
                    .cloned(),
            })
            .collect()
    }
}

/// Feeds `tx` with the events of `range` from `start` on (0: the revision after the current
/// one) until the receiver is dropped or the watch fails. Its first frame comes at once (no
/// events: the watch is set up).
pub(crate) async fn feed(
    hub: Arc<WatchHub>,
    range: KeyRange,
    start: u64,
    options: WatchOptions,
    tx: mpsc::Sender<WatchFrame>,
    allowed: Option<StillAllowed>,
) {
    // Listening before the replay: every batch the hub reads after it is seen.
    let mut live = hub.subscribe();
    let mut feed = Feed {
        store: Arc::clone(&hub.store),
        range,
        options,
        next: start,
        tx,
        started: false,
        allowed,
    };
    if !feed.catch_up().await {
        return;
    }
    let progress = (options.progress_ms > 0).then(|| Duration::from_millis(options.progress_ms));
    let mut quiet_since = tokio::time::Instant::now();
    let watcher = feed.tx.clone();
    loop {
        let quiet = async move {
            match progress {
                Some(every) => tokio::time::sleep_until(quiet_since + every).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            batch = live.recv() => {
                let batch = match batch {
                    Ok(batch) => Some(batch),
                    // This watch fell behind the hub.
                    Err(broadcast::error::RecvError::Lagged(_)) => None,
                    Err(broadcast::error::RecvError::Closed) => {
                        let stopped =
                            ClientError::Unavailable("the node's watch reader stopped".into());
                        let _ = feed.tx.send(Err(stopped)).await;
                        return;
                    }
                };
                match batch {
                    Some(batch) if batch.to < feed.next => {}
                    Some(batch) if batch.from <= feed.next => {
                        let events = feed.select(&batch);
                        feed.next = batch.to + 1;
                        if !events.is_empty() {
                            if !feed.send(events, batch.to).await {
                                return;
                            }
                            quiet_since = tokio::time::Instant::now();
                        }
                    }
                    // Lagged, or a gap between what this watch delivered and the batch:
                    // from disk.
                    _ => {
                        if !feed.catch_up().await {
                            return;
                        }
                        quiet_since = tokio::time::Instant::now();
                    }
                }
            }
            () = quiet => {
                let reached = feed.next.saturating_sub(1);
                if !feed.send(Vec::new(), reached).await {
                    return;
                }
                quiet_since = tokio::time::Instant::now();
            }
            () = watcher.closed() => return,
        }
    }
}
