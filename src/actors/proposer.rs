//! The RaftHandle's proposer (group commit): one task per Raft instance that turns the writes
//! queued while an entry is in flight into the next `Command::Batch` entry, proposes it, and
//! answers each write. Never names the node, the supervisor or the net servers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use openraft::Raft;
use tokio::sync::{mpsc, oneshot};

use crate::actors::raft_error::{RaftError, write_error};
use crate::command::{BatchItem, Command, Request, Response, TypeConfig};
use crate::limits::{PROPOSAL_BATCH_BYTES_MAX, PROPOSAL_BATCH_MAX, PROPOSAL_LINGER};

/// A write waiting for the proposer, and where its answer goes.
pub(super) struct Proposal {
    pub(super) write: Queued,
    pub(super) reply: oneshot::Sender<Result<Response, RaftError>>,
}

/// What the proposer may put in a batch (a client's write) and what it proposes alone.
pub(super) enum Queued {
    Write(BatchItem),
    Alone(Request),
}

/// The proposer of one Raft instance: takes the first queued write and every client write
/// queued behind it (up to the batch bounds), proposes them as one log entry, answers each,
/// and repeats; one entry in flight at a time, so writes arriving meanwhile form the next
/// batch. When writes were already waiting as an entry was answered, it first waits up to
/// `PROPOSAL_LINGER` for the writers that entry answered, so concurrent writers share one
/// entry rather than alternate in two half-size ones (a lone writer never waits). Housekeeping
/// commands are proposed alone. A write whose caller stopped waiting (it
/// was told the outcome is unknown) is dropped unproposed, so a retry cannot apply it twice.
pub(super) struct Proposer {
    pub(super) raft: Raft<TypeConfig>,
    pub(super) withdrawn: Arc<AtomicBool>,
    /// Why the node stopped this instance (`RaftHandle::stopping_because`).
    pub(super) stopped_because: Arc<std::sync::Mutex<Option<String>>>,
    pub(super) node_label: String,
}

/// Each reply with its answer.
type Answers = Vec<(
    oneshot::Sender<Result<Response, RaftError>>,
    Result<Response, RaftError>,
)>;

impl Proposer {
    pub(super) async fn run(self, mut queue: mpsc::UnboundedReceiver<Proposal>) {
        let mut carried: Option<Proposal> = None;
        // The writers answered by the last entry: when writes were already waiting as it was
        // answered, those writers are expected back within a client round trip.
        let mut answered = 0;
        loop {
            let (first, waiting) = match carried.take() {
                Some(proposal) => (proposal, true),
                None => match queue.try_recv() {
                    Ok(proposal) => (proposal, true),
                    Err(_) => match queue.recv().await {
                        Some(proposal) => (proposal, false),
                        None => return,
                    },
                },
            };
            // Wait a moment for the writers just answered, so the two groups of writers
            // (those answered and those that queued meanwhile) share the next entry instead
            // of taking turns in half-size entries.
            let expected = if waiting && answered > 1 {
                (queue.len() + 1 + answered).min(PROPOSAL_BATCH_MAX)
            } else {
                0
            };
            let deadline = tokio::time::Instant::now() + PROPOSAL_LINGER;
            let mut bytes = match &first.write {
                Queued::Write(item) => Some(item.op.payload_bytes()),
                Queued::Alone(_) => None,
            };
            let mut batch = vec![first];
            // A client write takes the client writes queued behind it, within the bounds.
            while let Some(batch_bytes) = bytes.filter(|_| batch.len() < PROPOSAL_BATCH_MAX) {
                let next = match queue.try_recv() {
                    Ok(next) => next,
                    Err(_) if batch.len() < expected => {
                        match tokio::time::timeout_at(deadline, queue.recv()).await {
                            Ok(Some(next)) => next,
                            Ok(None) | Err(_) => break,
                        }
                    }
                    Err(_) => break,
                };
                let fits = match &next.write {
                    Queued::Write(item) => Some(batch_bytes + item.op.payload_bytes())
                        .filter(|total| *total <= PROPOSAL_BATCH_BYTES_MAX),
                    Queued::Alone(_) => None,
                };
                match fits {
                    Some(total) => {
                        bytes = Some(total);
                        batch.push(next);
                    }
                    None => {
                        carried = Some(next);
                        break;
                    }
                }
            }
            batch.retain(|proposal| !proposal.reply.is_closed());
            if batch.is_empty() {
                continue;
            }
            if self.withdrawn.load(Ordering::SeqCst) {
                // Stopping or failed: what is still queued was never proposed.
                for proposal in batch.into_iter().chain(carried.take()) {
                    let _ = proposal.reply.send(Err(RaftError::NotRunning));
                }
                continue;
            }
            metrics::histogram!(crate::metrics::RAFT_BATCH_REQUESTS, "node_id" => self.node_label.clone())
                .record(batch.len() as f64);
            let answers = self.propose(batch).await;
            answered = answers.len();
            let committed = answers.iter().filter(|(_, a)| a.is_ok()).count() as u64;
            let failed = answers.len() as u64 - committed;
            metrics::counter!(crate::metrics::RAFT_PROPOSALS_COMMITTED, "node_id" => self.node_label.clone())
                .increment(committed);
            metrics::counter!(crate::metrics::RAFT_PROPOSALS_FAILED, "node_id" => self.node_label.clone())
                .increment(failed);
            for (reply, answer) in answers {
                let _ = reply.send(answer);
            }
        }
    }

    /// Proposes `batch` as one log entry (a lone write as itself) and pairs each reply with
    /// its answer. An entry Raft refuses or fails fails every write in it alike (none was
    /// applied).
    async fn propose(&self, batch: Vec<Proposal>) -> Answers {
        let count = batch.len();
        let (writes, replies): (Vec<Queued>, Vec<_>) =
            batch.into_iter().map(|p| (p.write, p.reply)).unzip();
        let request = if count == 1 {
            match writes.into_iter().next().expect("one write") {
                Queued::Write(item) => Request {
                    now_ms: item.now_ms,
                    command: item.op.into(),
                },
                Queued::Alone(request) => request,
            }
        } else {
            let items = writes
                .into_iter()
                .filter_map(|write| match write {
                    Queued::Write(item) => Some(item),
                    Queued::Alone(_) => None,
                })
                .collect();
            Request {
                now_ms: crate::clock::now_ms(),
                command: Command::Batch(items),
            }
        };
        let answers: Vec<Result<Response, RaftError>> = match self.raft.client_write(request).await
        {
            Ok(written) if count == 1 => vec![Ok(written.data)],
            Ok(written) => batch_answers(written.data, count),
            Err(error) => {
                let because = crate::sync::lock(&self.stopped_because).clone();
                vec![Err(write_error(error, because)); count]
            }
        };
        replies.into_iter().zip(answers).collect()
    }
}

/// The answers of a batch entry's writes, in order.
fn batch_answers(response: Response, count: usize) -> Vec<Result<Response, RaftError>> {
    match response.result {
        Ok(_) if response.batch.len() == count => response.batch.into_iter().map(Ok).collect(),
        Ok(_) => vec![
            Err(RaftError::Unavailable(format!(
                "raft: a batch of {count} writes got {} answers",
                response.batch.len()
            )));
            count
        ],
        Err(refused) => vec![
            Ok(Response {
                revision: response.revision,
                result: Err(refused),
                batch: Vec::new(),
            });
            count
        ],
    }
}
