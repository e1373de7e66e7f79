//! Linearizability under faults. Five clients run put / get / compare-and-swap on a handful
//! of keys against a 3-node cluster of real `aspen-node` processes while a nemesis SIGKILLs
//! and restarts nodes (the leader included) and isolates the leader through the node's
//! fault-injecting transport (`net.fault_injection`, `POST /admin/faults`). Every operation
//! is recorded with its invocation and completion time; a write whose answer was lost is
//! indeterminate (it may or may not have happened). The history is then checked per key
//! against a register model by a Wing-Gong-Lowe search with memoization; on failure the test
//! prints the smallest non-linearizable part of the key's history.
//!
//! Meanwhile one watcher per node watches the keys from the first revision on, resuming on
//! another node whenever its node dies or cannot serve; at the end every watcher's stream must
//! be the committed history of the keys exactly: no gap, no duplicate, in revision order,
//! every acknowledged write in it once, each event's previous value the one before it, ending
//! at the final state, and equal to a fresh replay of the history on every node.
//!
//! CI runs 6 faults; `ASPEN_TEST_LONG=1` runs 60.

#[allow(dead_code)]
#[path = "cluster/util.rs"]
mod util;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aspen::api::{
    Compare, CompareOp, CompareTarget, Consistency, KeyRange, NodeId, Output, Put, Txn, TxnOp,
    WatchEvent, WatchOptions,
};
use aspen::net::endpoint::NodeAddress;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use util::{NodeProcess, eventually, start_process_cluster};

// ---------------------------------------------------------------------------------------------
// The checker.

/// A register value: `None` is a missing key.
type Value = Option<String>;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Put(String),
    Get,
    /// Put `new` if the value is `expected`.
    Cas {
        expected: String,
        new: String,
    },
}

/// What the client saw. `Unknown`: the answer was lost (a timeout, a closed connection), so
/// the operation may or may not have taken effect, at any time after its invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Ok,
    Read(Value),
    /// A compare-and-swap that did not swap, with the value it found.
    Refused(Value),
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Event {
    client: usize,
    key: String,
    op: Op,
    outcome: Outcome,
    /// Nanoseconds since the start of the run.
    invoked: u64,
    /// `u64::MAX` when the outcome is unknown.
    completed: u64,
}

/// The register model: the states after applying `event` to `state` (none: impossible).
fn step(state: &Value, event: &Event) -> Vec<Value> {
    match (&event.op, &event.outcome) {
        (Op::Get, Outcome::Read(seen)) if seen == state => vec![state.clone()],
        (Op::Put(value), Outcome::Ok | Outcome::Unknown) => vec![Some(value.clone())],
        (Op::Cas { expected, new }, Outcome::Ok) if state.as_ref() == Some(expected) => {
            vec![Some(new.clone())]
        }
        (Op::Cas { expected, .. }, Outcome::Refused(seen))
            if state.as_ref() != Some(expected) && seen == state =>
        {
            vec![state.clone()]
        }
        (Op::Cas { expected, new }, Outcome::Unknown) => {
            if state.as_ref() == Some(expected) {
                vec![Some(new.clone()), state.clone()]
            } else {
                vec![state.clone()]
            }
        }
        _ => Vec::new(),
    }
}

/// The value an operation writes, when it may write one.
fn written(event: &Event) -> Option<&str> {
    match &event.op {
        Op::Put(value) | Op::Cas { new: value, .. } => Some(value),
        Op::Get => None,
    }
}

/// The value an operation observed.
fn observed(event: &Event) -> Option<&str> {
    match &event.outcome {
        Outcome::Read(Some(value)) | Outcome::Refused(Some(value)) => Some(value),
        Outcome::Ok => match &event.op {
            Op::Cas { expected, .. } => Some(expected),
            _ => None,
        },
        _ => None,
    }
}

/// Drops indeterminate writes whose (unique) value nobody observed: leaving such a write out
/// is always at least as good an explanation as putting it anywhere, and each one left in
/// doubles the search.
fn prune(history: &[Event]) -> Vec<Event> {
    let seen: HashSet<&str> = history.iter().filter_map(observed).collect();
    history
        .iter()
        .filter(|e| e.outcome != Outcome::Unknown || written(e).is_some_and(|v| seen.contains(v)))
        .cloned()
        .collect()
}

/// Whether one key's history is linearizable from a missing key: a depth-first search for an
/// order of the operations that respects real time (an operation can come next only if it
/// was invoked before every not yet ordered operation completed) and the model; states
/// already explored (the set of ordered operations and the value) are not explored again.
/// Indeterminate operations may also be left out (they never took effect).
fn linearizable(history: &[Event]) -> bool {
    linearizable_from(history, &[None])
}

/// Whether the history is linearizable from one of the `initial` values.
fn linearizable_from(history: &[Event], initial: &[Value]) -> bool {
    let history = prune(history);
    let words = history.len().div_ceil(64).max(1);
    let definite = history
        .iter()
        .filter(|e| e.outcome != Outcome::Unknown)
        .count();
    initial.iter().any(|start| {
        let mut done = vec![0u64; words];
        let mut seen: HashSet<(Vec<u64>, Value)> = HashSet::new();
        search(&history, &mut done, definite, start, &mut seen)
    })
}

fn search(
    history: &[Event],
    done: &mut Vec<u64>,
    definite_left: usize,
    state: &Value,
    seen: &mut HashSet<(Vec<u64>, Value)>,
) -> bool {
    if definite_left == 0 {
        return true;
    }
    if !seen.insert((done.clone(), state.clone())) {
        return false;
    }
    let is_done = |done: &[u64], i: usize| done[i / 64] & (1 << (i % 64)) != 0;
    let horizon = (0..history.len())
        .filter(|i| !is_done(done, *i))
        .map(|i| history[i].completed)
        .min()
        .unwrap_or(u64::MAX);
    for i in 0..history.len() {
        let event = &history[i];
        if is_done(done, i) || event.invoked > horizon {
            continue;
        }
        for next in step(state, event) {
            done[i / 64] |= 1 << (i % 64);
            let left = definite_left - usize::from(event.outcome != Outcome::Unknown);
            let found = search(history, done, left, &next, seen);
            done[i / 64] &= !(1 << (i % 64));
            if found {
                return true;
            }
        }
    }
    false
}

/// The smallest failing part of a non-linearizable history: first the shortest prefix (by
/// invocation) that fails, with the writes of every value it observed added (a read may
/// complete after a later-invoked write it saw); then as many of its first operations dropped
/// (see `suffix`) as keep it failing from any value the key ever held.
fn smallest_failing_part(history: &[Event]) -> Vec<Event> {
    let mut sorted = history.to_vec();
    sorted.sort_by_key(|e| e.invoked);
    let prefix = |k: usize| -> Vec<Event> {
        let mut part: Vec<Event> = sorted[..k].to_vec();
        let needed: BTreeSet<String> = part.iter().filter_map(observed).map(String::from).collect();
        for e in &sorted[k..] {
            if written(e).is_some_and(|v| needed.contains(v)) {
                part.push(e.clone());
            }
        }
        part
    };
    let (mut good, mut bad) = (0, sorted.len());
    while bad - good > 1 {
        let mid = (good + bad) / 2;
        if linearizable(&prefix(mid)) {
            good = mid;
        } else {
            bad = mid;
        }
    }
    let mut part = prefix(bad);
    part.sort_by_key(|e| e.invoked);
    let values: Vec<Value> = std::iter::once(None)
        .chain(
            sorted
                .iter()
                .filter_map(written)
                .map(|v| Some(v.to_string())),
        )
        .collect();
    let (mut fails, mut passes) = (0, part.len());
    while passes - fails > 1 {
        let mid = (fails + passes) / 2;
        if linearizable_from(&suffix(&part, mid), &values) {
            passes = mid;
        } else {
            fails = mid;
        }
    }
    suffix(&part, fails)
}

/// `part` (sorted by invocation) without its first `drop` operations, keeping those that
/// were still running when a kept one was invoked: every dropped operation then precedes
/// every kept one in any order, so the kept ones start from whatever value the key held.
fn suffix(part: &[Event], drop: usize) -> Vec<Event> {
    let mut keep = vec![false; part.len()];
    keep[drop..].iter_mut().for_each(|k| *k = true);
    loop {
        let start = (0..part.len())
            .filter(|i| keep[*i])
            .map(|i| part[i].invoked)
            .min()
            .unwrap_or(u64::MAX);
        let mut grew = false;
        for i in 0..drop {
            if !keep[i] && part[i].completed > start {
                keep[i] = true;
                grew = true;
            }
        }
        if !grew {
            return (0..part.len())
                .filter(|i| keep[*i])
                .map(|i| part[i].clone())
                .collect();
        }
    }
}

fn describe(history: &[Event]) -> String {
    let mut sorted = history.to_vec();
    sorted.sort_by_key(|e| e.invoked);
    sorted
        .iter()
        .map(|e| {
            let completed = if e.completed == u64::MAX {
                "?".to_string()
            } else {
                format!("{:.3}ms", e.completed as f64 / 1e6)
            };
            format!(
                "  client {} {:?} -> {:?}   [{:.3}ms, {}]",
                e.client,
                e.op,
                e.outcome,
                e.invoked as f64 / 1e6,
                completed
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Checks every key's history; panics with the smallest failing part if one is not
/// linearizable.
fn check(history: &[Event]) {
    let mut by_key: BTreeMap<&str, Vec<Event>> = BTreeMap::new();
    for event in history {
        by_key.entry(&event.key).or_default().push(event.clone());
    }
    for (key, events) in by_key {
        if !linearizable(&events) {
            let part = smallest_failing_part(&events);
            panic!(
                "the history of key {key} ({} operations) is not linearizable; smallest \
                 failing part ({} operations, from any earlier value):\n{}",
                events.len(),
                part.len(),
                describe(&part)
            );
        }
    }
}

fn event(op: Op, outcome: Outcome, invoked: u64, completed: u64) -> Event {
    Event {
        client: 0,
        key: "k".into(),
        op,
        outcome,
        invoked,
        completed,
    }
}

fn put(v: &str) -> Op {
    Op::Put(v.into())
}

fn read(v: Option<&str>) -> Outcome {
    Outcome::Read(v.map(String::from))
}

// Proves the checker accepts linearizable histories (overlapping operations in either order,
// an indeterminate write seen later, a refused CAS that saw the current value) and rejects
// non-linearizable ones (a stale read after a completed write, a value read back after it
// was overwritten, a CAS that swapped the wrong value), naming a small failing part.
#[test]
fn checker_accepts_good_and_rejects_bad_histories() {
    let good = [
        event(put("a"), Outcome::Ok, 0, 10),
        // Concurrent with the put of b: either order is fine.
        event(Op::Get, read(Some("b")), 15, 40),
        event(put("b"), Outcome::Ok, 20, 30),
        event(Op::Get, read(Some("b")), 50, 60),
        // Lost answer, but its value is seen later: it happened.
        event(put("c"), Outcome::Unknown, 70, u64::MAX),
        event(Op::Get, read(Some("c")), 200, 210),
        event(
            Op::Cas {
                expected: "x".into(),
                new: "d".into(),
            },
            Outcome::Refused(Some("c".into())),
            220,
            230,
        ),
        event(
            Op::Cas {
                expected: "c".into(),
                new: "e".into(),
            },
            Outcome::Ok,
            240,
            250,
        ),
        // Lost answer, never seen: left out.
        event(put("f"), Outcome::Unknown, 260, u64::MAX),
        event(Op::Get, read(Some("e")), 300, 310),
    ];
    assert!(linearizable(&good));
    assert!(linearizable(&[event(Op::Get, read(None), 0, 1)]));

    let stale_read = [
        event(put("a"), Outcome::Ok, 0, 10),
        event(put("b"), Outcome::Ok, 20, 30),
        event(Op::Get, read(Some("a")), 40, 50),
    ];
    assert!(!linearizable(&stale_read));
    let back_in_time = [
        event(put("a"), Outcome::Ok, 0, 10),
        event(Op::Get, read(Some("a")), 5, 50),
        event(put("b"), Outcome::Ok, 20, 30),
        event(Op::Get, read(Some("b")), 60, 70),
        event(Op::Get, read(Some("a")), 80, 90),
        event(put("c"), Outcome::Ok, 100, 110),
    ];
    assert!(!linearizable(&back_in_time));
    let wrong_swap = [
        event(put("a"), Outcome::Ok, 0, 10),
        event(
            Op::Cas {
                expected: "b".into(),
                new: "c".into(),
            },
            Outcome::Ok,
            20,
            30,
        ),
    ];
    assert!(!linearizable(&wrong_swap));
    // The smallest failing part of `back_in_time`: b read, then a read with no write between
    // (from any earlier value); the puts around them are not needed to show the anomaly.
    let part = smallest_failing_part(&back_in_time);
    assert_eq!(
        part.iter().map(|e| e.invoked).collect::<Vec<_>>(),
        [60, 80],
        "{}",
        describe(&part)
    );
    assert!(!linearizable(&part));
}

// ---------------------------------------------------------------------------------------------
// The run against real processes.

const CLIENTS: usize = 5;
const KEYS: [&str; 4] = ["k0", "k1", "k2", "k3"];
/// Successful operations between the steps of a fault.
const OPS_PER_PHASE: u64 = 20;

fn faults() -> usize {
    if std::env::var_os("ASPEN_TEST_LONG").is_some_and(|v| v == "1") {
        60
    } else {
        6
    }
}

/// One client's loop: random operations on random keys until `stop`, recorded.
async fn run_client(
    index: usize,
    addresses: Vec<NodeAddress>,
    start: Instant,
    stop: Arc<AtomicBool>,
    succeeded: Arc<AtomicU64>,
) -> Vec<Event> {
    let client = aspen::testing::root_client(&addresses)
        .await
        .unwrap()
        .prefer(index % addresses.len())
        .with_retry_budget(Duration::from_secs(2))
        .with_request_timeout(Duration::from_secs(2));
    let mut rng = SmallRng::seed_from_u64(index as u64);
    let mut last_seen: BTreeMap<&str, String> = BTreeMap::new();
    let mut history = Vec::new();
    let mut n = 0;
    let now = || start.elapsed().as_nanos() as u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let key = KEYS[rng.random_range(0..KEYS.len())];
        let fresh = format!("c{index}-{n}");
        let roll = rng.random_range(0..3);
        let op = match (roll, last_seen.get(key)) {
            (0, _) => Op::Get,
            (1, Some(expected)) => Op::Cas {
                expected: expected.clone(),
                new: fresh,
            },
            _ => Op::Put(fresh),
        };
        let invoked = now();
        let outcome = match &op {
            Op::Get => match client.get_with(key, Consistency::Linearizable).await {
                Ok(kv) => Outcome::Read(kv.map(|kv| String::from_utf8(kv.value).unwrap())),
                // A read that failed had no effect: it is left out of the history.
                Err(_) => continue,
            },
            Op::Put(value) => match client.put(key, value.as_str()).await {
                Ok(_) => Outcome::Ok,
                Err(_) => Outcome::Unknown,
            },
            Op::Cas { expected, new } => {
                let txn = Txn {
                    compares: vec![Compare {
                        key: key.into(),
                        op: CompareOp::Equal,
                        target: CompareTarget::Value(expected.clone().into_bytes()),
                    }],
                    success: vec![TxnOp::Put(Put::new(key, new.as_str()))],
                    failure: vec![TxnOp::Get { key: key.into() }],
                };
                match client.txn(txn).await.map(|w| w.output) {
                    Ok(Output::Txn {
                        succeeded: true, ..
                    }) => Outcome::Ok,
                    Ok(Output::Txn {
                        succeeded: false,
                        results,
                    }) => match results.as_slice() {
                        [Output::Get { kv }] => Outcome::Refused(
                            kv.as_ref()
                                .map(|kv| String::from_utf8(kv.value.clone()).unwrap()),
                        ),
                        other => panic!("a refused CAS answered {other:?}"),
                    },
                    Ok(other) => panic!("a CAS answered {other:?}"),
                    Err(_) => Outcome::Unknown,
                }
            }
        };
        let completed = if outcome == Outcome::Unknown {
            u64::MAX
        } else {
            succeeded.fetch_add(1, Ordering::Relaxed);
            now()
        };
        match &outcome {
            Outcome::Read(Some(v)) | Outcome::Refused(Some(v)) => {
                last_seen.insert(key, v.clone());
            }
            Outcome::Ok => {
                if let Op::Put(v) | Op::Cas { new: v, .. } = &op {
                    last_seen.insert(key, v.clone());
                }
            }
            _ => {}
        }
        history.push(Event {
            client: index,
            key: key.to_string(),
            op,
            outcome,
            invoked,
            completed,
        });
    }
    history
}

// ---------------------------------------------------------------------------------------------
// The watchers.

/// The range the watchers watch: every key the clients write, and `END`.
const WATCHED: &[u8] = b"k";
/// Written once the clients stopped: a watcher that delivered it has everything before it.
const END: &str = "k-end";

/// One event as the watchers compare them: revision, key, value (none: a delete), previous.
type Seen = (u64, String, Option<String>, Option<String>);

fn seen(event: &WatchEvent) -> Seen {
    let text = |v: &[u8]| String::from_utf8(v.to_vec()).unwrap();
    (
        event.revision,
        text(&event.key),
        event.kv.as_ref().map(|kv| text(&kv.value)),
        event.prev.as_ref().map(|kv| text(&kv.value)),
    )
}

/// Watches the keys through `addresses[index]` (first) from revision 1 until `END` arrives,
/// returning every event delivered and the nodes that served them.
async fn run_watcher(index: usize, addresses: Vec<NodeAddress>) -> (Vec<Seen>, BTreeSet<NodeId>) {
    let client = aspen::testing::root_client(&addresses)
        .await
        .unwrap()
        .prefer(index)
        // A watch outlives a node's restart or isolation, however long the run takes.
        .with_retry_budget(Duration::from_secs(60))
        .with_request_timeout(Duration::from_secs(2));
    let options = WatchOptions {
        prev_kv: true,
        // A killed node's silence is noticed within three intervals.
        progress_ms: 300,
        ..WatchOptions::default()
    };
    let mut watcher = client
        .watch(KeyRange::prefix(WATCHED), 1, options)
        .await
        .unwrap_or_else(|e| panic!("watcher {index}: {e}"));
    let (mut events, mut served_by) = (Vec::new(), BTreeSet::new());
    loop {
        let batch = watcher
            .next()
            .await
            .unwrap_or_else(|e| panic!("watcher {index} ended: {e}"));
        served_by.insert(batch.served_by);
        for event in &batch.events {
            events.push(seen(event));
            if event.key == END.as_bytes() {
                return (events, served_by);
            }
        }
    }
}

/// Checks one watcher's stream against what the clients did and the keys' final values
/// (key to value and revision): revisions strictly increasing; every event a put of a value
/// some client tried to write to that key, its previous value the key's last value before
/// it; every acknowledged write there exactly once; each key's last event its final value.
fn check_stream(
    watcher: usize,
    stream: &[Seen],
    history: &[Event],
    last: &BTreeMap<String, (Value, u64)>,
) {
    let mut tried: BTreeMap<&str, &str> = BTreeMap::new();
    for event in history {
        if let Some(value) = written(event) {
            let refused = matches!(event.outcome, Outcome::Refused(_));
            if !refused {
                tried.insert(value, &event.key);
            }
        }
    }
    let mut current: BTreeMap<&str, (Value, u64)> = BTreeMap::new();
    let mut delivered: BTreeMap<&str, usize> = BTreeMap::new();
    for pair in stream.windows(2) {
        assert!(
            pair[0].0 < pair[1].0,
            "watcher {watcher}: revision {} after {}",
            pair[1].0,
            pair[0].0
        );
    }
    for (revision, key, value, prev) in stream.iter().filter(|e| e.1 != END) {
        let value = value
            .as_deref()
            .unwrap_or_else(|| panic!("watcher {watcher}: a delete of {key} at {revision}"));
        assert_eq!(
            tried.get(value).copied(),
            Some(key.as_str()),
            "watcher {watcher}: {key} = {value} at {revision} was never written there"
        );
        let before = current.get(key.as_str()).and_then(|(v, _)| v.clone());
        assert_eq!(
            *prev, before,
            "watcher {watcher}: the previous value of {key} at {revision}"
        );
        current.insert(key, (Some(value.to_string()), *revision));
        *delivered.entry(value).or_default() += 1;
    }
    for (value, times) in &delivered {
        assert_eq!(
            *times, 1,
            "watcher {watcher}: {value} delivered {times} times"
        );
    }
    for event in history {
        let acknowledged = matches!(
            (&event.op, &event.outcome),
            (Op::Put(_) | Op::Cas { .. }, Outcome::Ok)
        );
        if acknowledged {
            let value = written(event).unwrap();
            assert!(
                delivered.contains_key(value),
                "watcher {watcher}: the acknowledged write {value} of {} is missing",
                event.key
            );
        }
    }
    for (key, (value, revision)) in last {
        let streamed = current.get(key.as_str()).cloned().unwrap_or((None, 0));
        let expected = (value.clone(), value.as_ref().map_or(0, |_| *revision));
        assert_eq!(
            streamed, expected,
            "watcher {watcher}: the last event of {key} against its final value"
        );
    }
}

/// The leader as node `via` sees it.
async fn leader_seen_by(address: &NodeAddress) -> Option<NodeId> {
    let client = aspen::testing::root_client(&[*address]).await.ok()?;
    client.status_of(address).await.ok()?.leader
}

async fn set_isolated(node: &NodeProcess, isolate: bool) {
    let url = format!("http://{}/admin/faults", node.http_address().await);
    let token = aspen::net::admin::read_token(&node.dir).expect("the node's admin token");
    let response = reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .json(&serde_json::json!({ "isolate": isolate }))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{:?}", response.status());
}

// Proves: with five clients doing puts, linearizable gets and CASes on four keys while nodes
// are SIGKILLed and restarted (the leader, then a follower) and the leader is isolated from
// its peers and healed, the recorded history of every key is linearizable, and a watcher that
// started on each node delivered the committed history of the keys exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_under_kills_and_partitions_is_linearizable() {
    let root = tempfile::tempdir().unwrap();
    let env = [
        ("ASPEN_NET__FAULT_INJECTION", "true"),
        // Requests to an isolated leader give up after a second instead of ten.
        ("ASPEN_NET__REQUEST_TIMEOUT_MS", "1000"),
        // The faults make openraft log every unreachable peer as an error.
        ("RUST_LOG", "error,openraft=off"),
    ];
    let (mut nodes, members) = start_process_cluster(root.path(), 1..=3, &env).await;
    let addresses: Vec<NodeAddress> = members.values().copied().collect();
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let succeeded = Arc::new(AtomicU64::new(0));
    let watchers: Vec<_> = (0..addresses.len())
        .map(|i| tokio::spawn(run_watcher(i, addresses.clone())))
        .collect();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            tokio::spawn(run_client(
                i,
                addresses.clone(),
                start,
                stop.clone(),
                succeeded.clone(),
            ))
        })
        .collect();
    let progress = |n: u64| {
        let from = succeeded.load(Ordering::Relaxed);
        let succeeded = succeeded.clone();
        async move {
            eventually("clients complete operations", || {
                std::future::ready(succeeded.load(Ordering::Relaxed) >= from + n)
            })
            .await;
        }
    };
    let log = Arc::new(Mutex::new(Vec::new()));
    for fault in 0..faults() {
        progress(OPS_PER_PHASE).await;
        let mut leader = None;
        for address in members.values() {
            leader = leader.or(leader_seen_by(address).await);
        }
        let leader = leader.expect("a leader before each fault");
        let follower = *members.keys().find(|id| **id != leader).unwrap();
        match fault % 3 {
            0 | 1 => {
                let victim = if fault % 3 == 0 { leader } else { follower };
                log.lock().unwrap().push(format!("kill node {victim}"));
                nodes.get_mut(&victim).unwrap().kill();
                progress(OPS_PER_PHASE).await;
                nodes.get_mut(&victim).unwrap().restart();
                nodes[&victim].address().await;
            }
            _ => {
                log.lock().unwrap().push(format!("isolate leader {leader}"));
                set_isolated(&nodes[&leader], true).await;
                let others: Vec<NodeAddress> = members
                    .iter()
                    .filter(|(id, _)| **id != leader)
                    .map(|(_, a)| *a)
                    .collect();
                eventually("the others elect a new leader", || async {
                    leader_seen_by(&others[0])
                        .await
                        .is_some_and(|l| l != leader)
                })
                .await;
                progress(OPS_PER_PHASE).await;
                set_isolated(&nodes[&leader], false).await;
            }
        }
    }
    progress(OPS_PER_PHASE).await;
    stop.store(true, Ordering::Relaxed);
    let mut history = Vec::new();
    for client in clients {
        history.extend(client.await.unwrap());
    }
    let unknown = history
        .iter()
        .filter(|e| e.outcome == Outcome::Unknown)
        .count();
    eprintln!(
        "linearizability: {} operations ({unknown} indeterminate) under faults {:?}",
        history.len(),
        log.lock().unwrap()
    );

    // The watchers: every stream ends at END, after every key's final value.
    let closing = aspen::testing::root_client(&addresses)
        .await
        .unwrap()
        .with_retry_budget(Duration::from_secs(30));
    closing.put(END, "end").await.unwrap();
    let mut last = BTreeMap::new();
    for key in KEYS {
        let kv = closing.get(key).await.unwrap();
        let revision = kv.as_ref().map_or(0, |kv| kv.mod_revision);
        let value = kv.map(|kv| String::from_utf8(kv.value).unwrap());
        last.insert(key.to_string(), (value, revision));
    }
    let mut streams = Vec::new();
    for (i, watcher) in watchers.into_iter().enumerate() {
        let (stream, served_by) = tokio::time::timeout(Duration::from_secs(120), watcher)
            .await
            .unwrap_or_else(|_| panic!("watcher {i} did not reach the end"))
            .unwrap();
        eprintln!(
            "watcher {i}: {} events, served by nodes {served_by:?}",
            stream.len()
        );
        check_stream(i, &stream, &history, &last);
        streams.push(stream);
    }
    // The committed history: each node's replay of it from revision 1, read afresh.
    for (i, address) in addresses.iter().enumerate() {
        let (replay, served_by) = run_watcher(0, vec![*address]).await;
        assert_eq!(served_by.len(), 1);
        for (w, stream) in streams.iter().enumerate() {
            assert!(
                *stream == replay,
                "watcher {w}'s stream differs from node {}'s history ({} against {} events)",
                i + 1,
                stream.len(),
                replay.len()
            );
        }
    }

    // The search recurses once per operation of a key: give it a stack to match.
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(move || check(&history))
        .unwrap()
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
}
