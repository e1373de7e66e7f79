//! etcd's `Watch` service: one bidirectional stream carries many watches. Each created
//! watch is an Aspen watch on this node (`ClientPort::watch`, served from its applied state,
//! as etcd serves watches from the member the client reached); a task per watch turns its
//! frames into `WatchResponse`s on the stream's one bounded queue.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::api::error::CommandError;
use crate::api::{
    ClientError, ClientOp, ClientOutput, EventKind, KeyValue, WatchEvent, WatchFilter, WatchOptions,
};
use crate::etcd::EtcdPort;
use crate::etcd::kv::to_kv;
use crate::etcd::proto::etcdserverpb::{
    self as pb, watch_create_request::FilterType, watch_request, watch_server::Watch,
};
use crate::etcd::proto::mvccpb;
use crate::etcd::{Gateway, key_range, signed, unsigned};

/// Responses a stream may have waiting for its client; a watch whose events do not fit
/// waits (its node-side feed is bounded too).
const RESPONSES_QUEUED: usize = 16;
/// Watches one stream may run at once.
pub const WATCHES_PER_STREAM_MAX: usize = 1_000;
/// A watch created with `fragment` splits an answer of more event bytes than this into
/// several, all but the last marked `fragment` (etcd's default `--max-request-bytes`).
const FRAGMENT_BYTES: usize = crate::limits::REQUEST_BYTES_MAX_DEFAULT;

type Responses = mpsc::Sender<Result<pb::WatchResponse, Status>>;

/// A running watch of a stream: its task and the revision it has delivered up to.
struct Running {
    task: tokio::task::JoinHandle<()>,
    reached: Arc<AtomicU64>,
}

/// An Aspen event as etcd's: a delete carries the key and the revision of the delete.
fn event(e: WatchEvent) -> mvccpb::Event {
    let kind = match e.kind {
        EventKind::Put => mvccpb::event::EventType::Put,
        EventKind::Delete => mvccpb::event::EventType::Delete,
    };
    let kv = match e.kv {
        Some(kv) => to_kv(kv),
        None => to_kv(KeyValue {
            key: e.key,
            value: Vec::new(),
            version: 0,
            create_revision: 0,
            mod_revision: e.revision,
            lease: None,
            expires_at_ms: None,
        }),
    };
    mvccpb::Event {
        r#type: kind as i32,
        kv: Some(kv),
        prev_kv: e.prev.map(to_kv),
    }
}

impl<P: EtcdPort> Gateway<P> {
    fn watch_response(&self, id: i64, revision: u64) -> pb::WatchResponse {
        pb::WatchResponse {
            header: self.local_header(revision),
            watch_id: id,
            ..pb::WatchResponse::default()
        }
    }

    /// The answer to a watch that could not start or had to end: canceled, with the oldest
    /// revision kept when it was compacted.
    fn canceled(&self, id: i64, error: &ClientError) -> pb::WatchResponse {
        let compact_revision = match error {
            ClientError::Command(CommandError::Compacted { oldest, .. }) => signed(*oldest),
            _ => 0,
        };
        let reason = match compact_revision {
            0 => error.to_string(),
            _ => "etcdserver: mvcc: required revision has been compacted".to_string(),
        };
        pb::WatchResponse {
            canceled: true,
            compact_revision,
            cancel_reason: reason,
            ..self.watch_response(id, 0)
        }
    }

    /// Starts watch `id` from `create`; its responses go to `out`.
    async fn create(
        &self,
        id: i64,
        create: pb::WatchCreateRequest,
        out: &Responses,
    ) -> Option<Running> {
        let (puts, deletes) = (
            !create.filters.contains(&(FilterType::Noput as i32)),
            !create.filters.contains(&(FilterType::Nodelete as i32)),
        );
        let filter = match (puts, deletes) {
            (true, true) => WatchFilter::All,
            (true, false) => WatchFilter::PutsOnly,
            (false, true) => WatchFilter::DeletesOnly,
            (false, false) => {
                let refused = ClientError::BadRequest(
                    "a watch that filters out both puts and deletes sees nothing".into(),
                );
                let _ = out.send(Ok(self.canceled(id, &refused))).await;
                return None;
            }
        };
        let op = ClientOp::Watch {
            range: key_range(&create.key, &create.range_end),
            start_revision: unsigned(create.start_revision),
            options: WatchOptions {
                filter,
                prev_kv: create.prev_kv,
                progress_ms: if create.progress_notify {
                    self.progress_notify_ms
                } else {
                    0
                },
            },
        };
        // The first frame (the watch is set up, or why not) is answered here, so `created`
        // answers come in the order of the create requests, which etcd's Go client relies on.
        let mut frames = match self.port().watch(self.client(), &op).await {
            Ok(frames) => frames,
            Err(error) => {
                self.created_then_canceled(id, &error, out).await;
                return None;
            }
        };
        let (events, revision) = match frames.recv().await {
            Some(Ok((ClientOutput::Watch(events), revision))) => (events, revision),
            Some(Err(error)) => {
                self.created_then_canceled(id, &error, out).await;
                return None;
            }
            Some(Ok(_)) | None => {
                let ended = ClientError::Unavailable("the watch ended as it started".into());
                self.created_then_canceled(id, &ended, out).await;
                return None;
            }
        };
        let created = pb::WatchResponse {
            created: true,
            ..self.watch_response(id, revision)
        };
        out.send(Ok(created)).await.ok()?;
        let fragment = create.fragment;
        if !events.is_empty() {
            for answer in self.events(id, events, revision, fragment) {
                out.send(Ok(answer)).await.ok()?;
            }
        }
        let reached = Arc::new(AtomicU64::new(revision));
        let task = tokio::spawn(self.clone().forward(
            id,
            fragment,
            frames,
            out.clone(),
            Arc::clone(&reached),
        ));
        Some(Running { task, reached })
    }

    /// As etcd answers a watch that could not start: created, then canceled (compacted: with
    /// the oldest revision kept).
    async fn created_then_canceled(&self, id: i64, error: &ClientError, out: &Responses) {
        let created = pb::WatchResponse {
            created: true,
            ..self.watch_response(id, 0)
        };
        if out.send(Ok(created)).await.is_ok() {
            let _ = out.send(Ok(self.canceled(id, error))).await;
        }
    }

    /// The answers carrying `events`: one, or with `fragment` asked for, as many as keep each
    /// under [`FRAGMENT_BYTES`] (one event at least), all but the last marked `fragment`, which
    /// etcd's clients join again.
    fn events(
        &self,
        id: i64,
        events: Vec<WatchEvent>,
        revision: u64,
        fragment: bool,
    ) -> Vec<pb::WatchResponse> {
        let events: Vec<mvccpb::Event> = events.into_iter().map(event).collect();
        let mut parts: Vec<Vec<mvccpb::Event>> = vec![Vec::new()];
        let mut bytes = 0;
        for event in events {
            let size = prost::Message::encoded_len(&event);
            let part = parts.last_mut().expect("one part at least");
            if fragment && !part.is_empty() && bytes + size > FRAGMENT_BYTES {
                parts.push(vec![event]);
                bytes = size;
            } else {
                part.push(event);
                bytes += size;
            }
        }
        let last = parts.len() - 1;
        parts
            .into_iter()
            .enumerate()
            .map(|(i, events)| pb::WatchResponse {
                events,
                fragment: i < last,
                ..self.watch_response(id, revision)
            })
            .collect()
    }

    /// Turns watch `id`'s frames after the first into responses: events (or progress), and
    /// a cancel with the reason when the watch ends.
    async fn forward(
        self,
        id: i64,
        fragment: bool,
        mut frames: crate::net::service::WatchFrames,
        out: Responses,
        reached: Arc<AtomicU64>,
    ) {
        while let Some(frame) = frames.recv().await {
            let answers = match frame {
                Ok((ClientOutput::Watch(events), revision)) => {
                    reached.store(revision, Ordering::Relaxed);
                    self.events(id, events, revision, fragment)
                }
                Ok(_) => continue,
                Err(error) => vec![self.canceled(id, &error)],
            };
            for answer in answers {
                let ended = answer.canceled;
                if out.send(Ok(answer)).await.is_err() || ended {
                    return;
                }
            }
        }
    }

    /// One stream: creates, cancels and progress requests until the client closes it.
    async fn session(self, mut requests: Streaming<pb::WatchRequest>, out: Responses) {
        let mut running: HashMap<i64, Running> = HashMap::new();
        let mut next_id: i64 = 0;
        loop {
            let request = tokio::select! {
                request = requests.message() => request,
                () = out.closed() => break,
                () = self.stopped() => break,
            };
            let Ok(Some(request)) = request else { break };
            running.retain(|_, watch| !watch.task.is_finished());
            match request.request_union {
                Some(watch_request::RequestUnion::CreateRequest(create)) => {
                    let id = match create.watch_id {
                        0 => {
                            while running.contains_key(&next_id) {
                                next_id += 1;
                            }
                            next_id
                        }
                        id => id,
                    };
                    let refused = if running.contains_key(&id) {
                        Some(format!("etcdserver: duplicate watch ID {id}"))
                    } else if running.len() >= WATCHES_PER_STREAM_MAX {
                        Some(format!(
                            "aspen: a stream runs at most {WATCHES_PER_STREAM_MAX} watches"
                        ))
                    } else {
                        None
                    };
                    if let Some(reason) = refused {
                        let answer = pb::WatchResponse {
                            created: true,
                            canceled: true,
                            cancel_reason: reason,
                            ..self.watch_response(id, 0)
                        };
                        if out.send(Ok(answer)).await.is_err() {
                            break;
                        }
                        continue;
                    }
                    if let Some(watch) = self.create(id, create, &out).await {
                        running.insert(id, watch);
                    }
                }
                Some(watch_request::RequestUnion::CancelRequest(cancel)) => {
                    if let Some(watch) = running.remove(&cancel.watch_id) {
                        watch.task.abort();
                        // Stopped before the cancel is answered: nothing of it follows (a
                        // task in the middle of a send on another thread finishes it first).
                        let _ = watch.task.await;
                    }
                    let answer = pb::WatchResponse {
                        canceled: true,
                        ..self.watch_response(cancel.watch_id, 0)
                    };
                    if out.send(Ok(answer)).await.is_err() {
                        break;
                    }
                }
                Some(watch_request::RequestUnion::ProgressRequest(_)) => {
                    // Every watch of the stream delivered up to the least revision reached.
                    let revision = running
                        .values()
                        .map(|watch| watch.reached.load(Ordering::Relaxed))
                        .min()
                        .unwrap_or(0);
                    if out
                        .send(Ok(self.watch_response(-1, revision)))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                None => {}
            }
        }
        for watch in running.into_values() {
            watch.task.abort();
        }
    }
}

#[tonic::async_trait]
impl<P: EtcdPort> Watch for Gateway<P> {
    type WatchStream = ReceiverStream<Result<pb::WatchResponse, Status>>;

    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (out, responses) = mpsc::channel(RESPONSES_QUEUED);
        tokio::spawn(self.clone().session(request.into_inner(), out));
        Ok(Response::new(ReceiverStream::new(responses)))
    }
}
