//! `Client::watch`: a watch that survives the loss of its node. It reads batches from one
//! node's stream; when the stream breaks (the node died, restarted or was cut off), it starts
//! again on the next node from the revision after the last one delivered, so the caller gets
//! every event once, in revision order. A refusal (compacted, denied) ends it.

use std::time::Duration;

use crate::api::*;
use crate::client::{CLIENT_ALPN, Client, Error, Result};
use crate::limits::FRAME_BYTES_MAX;
use crate::net::connections::RequestError;
use crate::net::frame::{read_frame, write_frame};

/// One batch of a watch: whole revisions of events, in order; none: a progress notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchBatch {
    pub events: Vec<WatchEvent>,
    /// Every event up to this revision was delivered (in this batch or before).
    pub revision: u64,
    /// The node whose stream delivered it.
    pub served_by: NodeId,
}

/// A running watch (see the module docs). Dropping it ends it.
pub struct Watcher<'c> {
    client: &'c Client,
    range: KeyRange,
    options: WatchOptions,
    /// The revision the watch goes on from: one past the last delivered.
    next: u64,
    stream: Option<iroh::endpoint::RecvStream>,
    /// Kept so the node sees the stream open; dropped with it.
    _send: Option<iroh::endpoint::SendStream>,
    /// A batch read while the watch was set up, not handed out yet.
    pending: Option<WatchBatch>,
    /// The index of the node it watches through (or tries first): the client's preferred
    /// node when the watch began, then the next one each time it fails over.
    node: usize,
}

impl Client {
    /// Watches `range` from `start_revision` (0: from the next change): see [`Watcher`].
    /// Returns once a node set the watch up; refused (compacted, denied, a bad range) with
    /// the node's error.
    pub async fn watch(
        &self,
        range: KeyRange,
        start_revision: u64,
        options: WatchOptions,
    ) -> Result<Watcher<'_>> {
        let node = self.preferred.load(std::sync::atomic::Ordering::Relaxed);
        self.watch_through(node, range, start_revision, options)
            .await
    }

    async fn watch_through(
        &self,
        node: usize,
        range: KeyRange,
        start_revision: u64,
        options: WatchOptions,
    ) -> Result<Watcher<'_>> {
        let mut watcher = Watcher {
            client: self,
            range,
            options,
            next: start_revision,
            stream: None,
            _send: None,
            pending: None,
            node,
        };
        watcher.resume().await?;
        Ok(watcher)
    }

    /// Watches `range` from the revision after the cluster's current one, as a linearizable
    /// read sees it (the leader confirms it with a quorum): every write acknowledged before
    /// this call is before the watch, every later one in it, whichever node serves the watch
    /// (a follower that is behind waits until it has applied that far). `watch` from 0
    /// instead starts after the serving node's own revision, which on a follower may be
    /// older.
    pub async fn watch_linearizable(
        &self,
        range: KeyRange,
        options: WatchOptions,
    ) -> Result<Watcher<'_>> {
        // The read goes to the leader (and makes it the client's preferred node); the watch
        // is still served through the node preferred before it.
        let node = self.preferred.load(std::sync::atomic::Ordering::Relaxed);
        let count = crate::client::RangeOptions {
            count_only: true,
            ..Default::default()
        };
        let now = self.range_page(range.clone(), &count).await?.revision;
        self.watch_through(node, range, now.saturating_add(1), options)
            .await
    }
}

impl Watcher<'_> {
    /// The revision the watch would resume from: one past the last delivered.
    pub fn next_revision(&self) -> u64 {
        self.next
    }

    /// The next batch. Resumes on another node when the stream breaks; an error ends the
    /// watch (compacted, denied, or no node reachable within the client's retry budget).
    pub async fn next(&mut self) -> Result<WatchBatch> {
        loop {
            if let Some(batch) = self.pending.take() {
                return Ok(batch);
            }
            if self.stream.is_none() {
                self.resume().await?;
                continue;
            }
            match self.read().await {
                Ok(batch) => return Ok(batch),
                // The stream broke, or its node could not go on (busy, stopping, its storage
                // closing or failing): the next turn resumes elsewhere.
                Err(error) if goes_on(&error) => {
                    self.stream = None;
                    self._send = None;
                    self.node = (self.node + 1) % self.client.nodes.len();
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// A frame from the current stream, or why it broke (`Error::Request`) or ended the watch.
    async fn read(&mut self) -> Result<WatchBatch> {
        let stream = self.stream.as_mut().expect("a stream is open");
        let silence = match self.options.progress_ms {
            0 => None,
            // A node that stays silent past three progress intervals is taken as gone.
            ms => Some(Duration::from_millis(ms) * 3 + self.client.request_timeout),
        };
        let read = read_frame::<_, ClientResponse>(stream, FRAME_BYTES_MAX);
        let frame = match silence {
            Some(limit) => tokio::time::timeout(limit, read).await.map_err(|_| {
                Error::Request(RequestError::Timeout {
                    address: "the watch's node".into(),
                    ms: limit.as_millis() as u64,
                })
            })?,
            None => read.await,
        }
        .map_err(|e| {
            Error::Request(RequestError::Stream {
                address: "the watch's node".into(),
                reason: e.to_string(),
            })
        })?;
        self.accept(frame)
    }

    /// Takes a frame: its batch, moving `next` on; or the refusal it carries.
    fn accept(&mut self, frame: ClientResponse) -> Result<WatchBatch> {
        match frame.result {
            Ok(ClientOutput::Watch(events)) => {
                let last = events.last().map_or(0, |event| event.revision);
                self.next = self
                    .next
                    .max(last.saturating_add(1))
                    .max(frame.revision.saturating_add(1));
                Ok(WatchBatch {
                    events,
                    revision: frame.revision,
                    served_by: frame.served_by,
                })
            }
            Ok(other) => Err(Error::Protocol(format!("{other:?}"))),
            Err(error) => Err(Error::Server(error)),
        }
    }

    /// Opens the watch from `next` on the first node that takes it, reading its first frame.
    async fn resume(&mut self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.client.retry_budget;
        let mut delay = Duration::from_millis(20);
        let nodes = self.client.nodes.len();
        loop {
            let node = self.client.nodes[self.node % nodes];
            let error = match self.open(&node).await {
                Ok(()) => return Ok(()),
                Err(error) if goes_on(&error) => error,
                Err(error) => return Err(error),
            };
            self.node = (self.node + 1) % nodes;
            if tokio::time::Instant::now() + delay > deadline {
                return Err(error);
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(500));
        }
    }

    async fn open(&mut self, node: &NodeAddress) -> Result<()> {
        let request = ClientRequest::new(ClientOp::Watch {
            range: self.range.clone(),
            start_revision: self.next,
            options: self.options,
        });
        let timeout = self.client.request_timeout;
        let opened = tokio::time::timeout(timeout, async {
            let conn = self
                .client
                .connections
                .connection(node, CLIENT_ALPN)
                .await?;
            let stream_error = |e: &dyn std::fmt::Display| RequestError::Stream {
                address: node.to_string(),
                reason: e.to_string(),
            };
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| RequestError::Connect {
                address: node.to_string(),
                reason: e.to_string(),
            })?;
            write_frame(&mut send, &request, FRAME_BYTES_MAX)
                .await
                .map_err(|e| stream_error(&e))?;
            let first: ClientResponse = read_frame(&mut recv, FRAME_BYTES_MAX)
                .await
                .map_err(|e| stream_error(&e))?;
            Ok::<_, RequestError>((send, recv, first))
        })
        .await;
        let (send, recv, first) = match opened {
            Ok(Ok(opened)) => opened,
            Ok(Err(error)) => {
                self.client.connections.forget(node, CLIENT_ALPN);
                return Err(Error::Request(error));
            }
            Err(_) => {
                self.client.connections.forget(node, CLIENT_ALPN);
                return Err(Error::Request(RequestError::Timeout {
                    address: node.to_string(),
                    ms: timeout.as_millis() as u64,
                }));
            }
        };
        let batch = self.accept(first)?;
        self.stream = Some(recv);
        self._send = Some(send);
        self.pending = Some(batch);
        Ok(())
    }
}

/// Whether the watch goes on on another node after `error` (the stream broke; the node is
/// busy, stopping, has not applied the cluster's root yet, or its storage could not serve
/// it), rather than end (compacted, denied).
fn goes_on(error: &Error) -> bool {
    matches!(
        error,
        Error::Request(_)
            | Error::Server(
                ClientError::Unavailable(_)
                    | ClientError::Busy { .. }
                    | ClientError::NotLeader { .. }
                    | ClientError::NoRootYet
                    | ClientError::Storage(_)
            )
    )
}
