//! A watch on this node: reads the history from the watch's revision on, whole revisions at a
//! time, and hands the batches to the client service through a small bounded channel. A
//! watcher that reads slowly fills the channel and the feed waits, reading nothing more from
//! disk meanwhile: its memory stays bounded, and once it falls behind what the history keeps
//! (compaction) it is told so and ends.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::api::{ClientError, ClientOutput, KeyRange, WatchOptions};
use crate::storage::Store;

/// Batches a watch may have waiting for its client (4 batches of 1 MiB measured the same
/// node RSS under 100 watchers: docs/performance.md).
pub(crate) const WATCH_BATCHES_QUEUED: usize = 2;
/// Events per batch (a revision is never split: one may make it longer).
const WATCH_BATCH_EVENTS: usize = 256;
/// Bytes of keys and values per batch (likewise): with `WATCH_BATCHES_QUEUED`, what a watch
/// that is not read holds in memory, besides QUIC's stream window.
const WATCH_BATCH_BYTES: usize = 256 << 10;

/// One frame of a watch: events (or none: progress) and the revision they bring the watcher
/// to; or why the watch ended.
pub type WatchFrame = Result<(ClientOutput, u64), ClientError>;

/// Feeds `tx` with the events of `range` from `start` on (0: the revision after the current
/// one) until the receiver is dropped or the watch fails. Its first frame comes at once (no
/// events: the watch is set up).
pub(crate) async fn feed(
    store: Arc<Store>,
    range: KeyRange,
    start: u64,
    options: WatchOptions,
    tx: mpsc::Sender<WatchFrame>,
) {
    let mut changes = store.subscribe_changes();
    let progress = (options.progress_ms > 0).then(|| Duration::from_millis(options.progress_ms));
    let mut next = start;
    let mut first = true;
    loop {
        changes.borrow_and_update();
        let read = {
            let (store, range) = (Arc::clone(&store), range.clone());
            tokio::task::spawn_blocking(move || {
                let view = store.read(crate::clock::now_ms())?;
                let from = match next {
                    0 => view.revision().saturating_add(1),
                    from => from,
                };
                let events =
                    view.events(from, &range, options, WATCH_BATCH_EVENTS, WATCH_BATCH_BYTES)?;
                Ok::<_, crate::storage::Error>((events, view.revision()))
            })
            .await
        };
        let (events, after, revision) = match read {
            Ok(Ok((Ok((events, after)), revision))) => (events, after, revision),
            Ok(Ok((Err(refused), _))) => {
                let _ = tx.send(Err(ClientError::Command(refused))).await;
                return;
            }
            Ok(Err(error)) => {
                let _ = tx.send(Err(ClientError::Storage(error.to_string()))).await;
                return;
            }
            Err(join) => {
                let _ = tx
                    .send(Err(ClientError::Storage(format!(
                        "watch read task: {join}"
                    ))))
                    .await;
                return;
            }
        };
        next = after;
        // Every event before `next` was delivered (or is in this batch).
        let reached = next.saturating_sub(1).min(revision);
        if !events.is_empty() || first {
            first = false;
            if tx
                .send(Ok((ClientOutput::Watch(events), reached)))
                .await
                .is_err()
            {
                return;
            }
            continue;
        }
        let waited = async {
            match progress {
                Some(every) => tokio::time::sleep(every).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = waited => {
                if tx.send(Ok((ClientOutput::Watch(Vec::new()), reached))).await.is_err() {
                    return;
                }
            }
            () = tx.closed() => return,
        }
    }
}
