//! `aspen bench`: a load generator in the manner of etcd's `benchmark` tool. Clients (tasks) share
//! connections (one QUIC endpoint each, started on different nodes, moving to the leader as the
//! client does) and issue one request at a
//! time until the run reaches `--total` operations or `--duration`; latencies of successful
//! operations go into an HdrHistogram, failures are counted by kind. Each node reports (in its
//! status, read before and after the run) the CPU time its process spent, as seconds per 1,000
//! operations, and its resident memory.
//!
//! With `--protocol etcd` the same loop speaks etcd v3's gRPC API to `--endpoints` (`etcd`):
//! Aspen's etcd API or etcd itself, measured through one client.
//!
//! Long because the workloads, the closed loop and the report (text and JSON) form one tool.

mod etcd;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::api::{
    Compare, CompareOp, CompareTarget, Consistency, NodeId, Output, ProcessUsage, Put, Txn, TxnOp,
};
use crate::client::{Client, Error as ClientError};
use crate::limits::{KEY_BYTES_MAX, VALUE_BYTES_MAX};
use crate::net::endpoint::NodeAddress;

/// How a command reads: `--consistency linearizable|stale` (the bench and the CLI's reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReadConsistency {
    Linearizable,
    Stale,
}

impl From<ReadConsistency> for Consistency {
    fn from(consistency: ReadConsistency) -> Self {
        match consistency {
            ReadConsistency::Linearizable => Consistency::Linearizable,
            ReadConsistency::Stale => Consistency::Stale,
        }
    }
}

/// At most this many clients (tasks) and connections.
pub const CLIENTS_MAX: usize = 10_000;
/// Latencies above this are recorded as this (requests time out well before).
const LATENCY_MAX_US: u64 = 600_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// Puts of `--value-size` bytes, keys taken in turn from the keyspace.
    Put,
    /// Single-key reads (`--consistency`); prints how many keys were found.
    Get,
    /// Compare-and-swap transactions: put if the key's mod revision is the one this client
    /// last saw, else read it (a conflict, counted apart from errors).
    TxnCas,
    /// Gets (`--read-percent` of operations) and puts, mixed at random.
    Mixed,
    /// The SQL `--query`, run again and again.
    Sql,
    /// Puts as `put`, while `--watchers` watch every bench key (spread over the nodes):
    /// reports events delivered per second and the latency from sending a put to its event
    /// reaching a watcher.
    Watch,
}

/// What `aspen bench` speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// Aspen's client protocol (QUIC) to the `--node` addresses.
    Aspen,
    /// etcd v3's gRPC API to the `--endpoints` (Aspen's etcd API, or etcd).
    Etcd,
}

#[derive(Debug, Clone, Args)]
pub struct BenchOptions {
    /// Aspen's client protocol, or etcd v3's gRPC API (put, get, mixed and txn-cas): the same
    /// loop then measures Aspen's etcd API and etcd itself through one client.
    #[arg(long, value_enum, default_value = "aspen")]
    pub protocol: Protocol,
    /// With --protocol etcd: HOST:PORT,... ; connection i goes to endpoint i modulo their count.
    #[arg(long, value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// Concurrent clients, each with one request in flight.
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// QUIC connections (client endpoints) shared by the clients, spread over the nodes.
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Stop after this many operations (default 10000 when --duration is not given).
    #[arg(long)]
    pub total: Option<u64>,
    /// Stop after this long (e.g. 30s); with --total, whichever comes first.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    #[arg(long, default_value_t = 16)]
    pub key_size: usize,
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Number of distinct keys the operations touch.
    #[arg(long, default_value_t = 10_000)]
    pub keyspace: u64,
    /// For get, mixed and sql.
    #[arg(long, value_enum, default_value = "linearizable")]
    pub consistency: ReadConsistency,
    /// For mixed: the share of reads, in percent.
    #[arg(long, default_value_t = 50)]
    pub read_percent: u8,
    /// For sql.
    #[arg(long, default_value = "SELECT count(*) FROM kv")]
    pub query: String,
    /// For watch: watchers of the bench's keys.
    #[arg(long, default_value_t = 100)]
    pub watchers: usize,
}

/// What a run measured.
#[derive(Debug)]
pub struct Report {
    pub workload: Workload,
    pub options: BenchOptions,
    pub nodes: usize,
    pub elapsed: Duration,
    pub histogram: Histogram<u64>,
    pub errors: BTreeMap<String, u64>,
    /// get: reads that found their key; txn-cas: swaps that succeeded.
    pub hits: u64,
    /// txn-cas: swaps refused because the key changed (a conflict, not an error).
    pub conflicts: u64,
    /// Each node's process during the run (nodes that did not report it are left out).
    pub processes: Vec<NodeProcess>,
    /// watch: events delivered to all watchers, and their latency from put sent to event
    /// received, in microseconds.
    pub events: u64,
    pub event_latency: Histogram<u64>,
}

/// What one node's process spent during a run, from its status before and after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeProcess {
    pub node_id: NodeId,
    /// CPU time used during the run.
    pub cpu_ms: u64,
    /// Resident memory at the end.
    pub rss_bytes: u64,
}

impl NodeProcess {
    /// CPU seconds per 1,000 successful operations of the run.
    fn cpu_s_per_1000(&self, ops: u64) -> f64 {
        self.cpu_ms as f64 / ops.max(1) as f64
    }
}

impl Report {
    pub fn ok(&self) -> u64 {
        self.histogram.len()
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn throughput(&self) -> f64 {
        self.ok() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn percentile_ms(&self, quantile: f64) -> f64 {
        self.histogram.value_at_quantile(quantile) as f64 / 1000.0
    }

    pub fn json(&self) -> Value {
        let mut report = json!({
            "workload": workload_name(self.workload),
            "protocol": match self.options.protocol {
                Protocol::Aspen => "aspen",
                Protocol::Etcd => "etcd",
            },
            "nodes": self.nodes,
            "clients": self.options.clients,
            "connections": self.options.connections,
            "key_size": self.options.key_size,
            "value_size": self.options.value_size,
            "keyspace": self.options.keyspace,
            "ops": self.ok(),
            "errors": self.error_count(),
            "errors_by_kind": self.errors,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "throughput_ops_s": self.throughput(),
            "cpu_s_per_1000_ops": self
                .processes
                .iter()
                .map(|p| (p.node_id.to_string(), json!(p.cpu_s_per_1000(self.ok()))))
                .collect::<serde_json::Map<_, _>>(),
            "rss_mb": self
                .processes
                .iter()
                .map(|p| (p.node_id.to_string(), json!(p.rss_bytes / 1_000_000)))
                .collect::<serde_json::Map<_, _>>(),
            "latency_ms": {
                "mean": self.histogram.mean() / 1000.0,
                "p50": self.percentile_ms(0.5),
                "p90": self.percentile_ms(0.9),
                "p99": self.percentile_ms(0.99),
                "p99_9": self.percentile_ms(0.999),
                "max": self.histogram.max() as f64 / 1000.0,
            },
        });
        match self.workload {
            Workload::Get | Workload::Mixed | Workload::Sql => {
                report["consistency"] = json!(consistency_name(self.options.consistency));
            }
            _ => {}
        }
        match self.workload {
            Workload::Get => report["found"] = json!(self.hits),
            Workload::TxnCas => {
                report["swapped"] = json!(self.hits);
                report["conflicts"] = json!(self.conflicts);
            }
            Workload::Mixed => report["read_percent"] = json!(self.options.read_percent),
            Workload::Sql => report["query"] = json!(self.options.query),
            Workload::Watch => {
                let at = |q: f64| self.event_latency.value_at_quantile(q) as f64 / 1000.0;
                report["watchers"] = json!(self.options.watchers);
                report["events"] = json!(self.events);
                report["events_per_s"] =
                    json!(self.events as f64 / self.elapsed.as_secs_f64().max(1e-9));
                report["event_latency_ms"] = json!({"p50": at(0.5), "p99": at(0.99)});
            }
            Workload::Put => {}
        }
        report
    }

    pub fn text(&self) -> String {
        let o = &self.options;
        let mut text = format!(
            "workload     {}{}\nsetup        {} {}(s), {} connection(s), {} client(s), keys {} B, \
             values {} B, keyspace {}\n",
            workload_name(self.workload),
            match self.workload {
                Workload::Get | Workload::Mixed | Workload::Sql =>
                    format!(" ({})", consistency_name(o.consistency)),
                _ => String::new(),
            },
            self.nodes,
            match o.protocol {
                Protocol::Aspen => "node",
                Protocol::Etcd => "etcd endpoint",
            },
            o.connections,
            o.clients,
            o.key_size,
            o.value_size,
            o.keyspace,
        );
        text.push_str(&format!(
            "operations   {} ok, {} failed in {:.2} s\nthroughput   {:.0} ops/s\n",
            self.ok(),
            self.error_count(),
            self.elapsed.as_secs_f64(),
            self.throughput()
        ));
        text.push_str(&format!(
            "latency ms   p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  mean {:.3}\n",
            self.percentile_ms(0.5),
            self.percentile_ms(0.9),
            self.percentile_ms(0.99),
            self.percentile_ms(0.999),
            self.histogram.max() as f64 / 1000.0,
            self.histogram.mean() / 1000.0,
        ));
        if !self.processes.is_empty() {
            let per_node: Vec<String> = self
                .processes
                .iter()
                .map(|p| {
                    format!(
                        "node {} {:.3} s ({} MB RSS)",
                        p.node_id,
                        p.cpu_s_per_1000(self.ok()),
                        p.rss_bytes / 1_000_000
                    )
                })
                .collect();
            text.push_str(&format!("cpu/1000 ops {}\n", per_node.join(", ")));
        }
        match self.workload {
            Workload::Get => text.push_str(&format!("found        {}\n", self.hits)),
            Workload::TxnCas => text.push_str(&format!(
                "swaps        {} succeeded, {} conflicted\n",
                self.hits, self.conflicts
            )),
            Workload::Watch => text.push_str(&format!(
                "watch        {} watchers, {} events ({:.0}/s), put sent to event ms p50 {:.3}  p99 {:.3}\n",
                self.options.watchers,
                self.events,
                self.events as f64 / self.elapsed.as_secs_f64().max(1e-9),
                self.event_latency.value_at_quantile(0.5) as f64 / 1000.0,
                self.event_latency.value_at_quantile(0.99) as f64 / 1000.0,
            )),
            _ => {}
        }
        for (kind, count) in &self.errors {
            text.push_str(&format!("error        {count} x {kind}\n"));
        }
        text
    }
}

fn workload_name(workload: Workload) -> &'static str {
    match workload {
        Workload::Put => "put",
        Workload::Get => "get",
        Workload::TxnCas => "txn-cas",
        Workload::Mixed => "mixed",
        Workload::Sql => "sql",
        Workload::Watch => "watch",
    }
}

fn consistency_name(consistency: ReadConsistency) -> &'static str {
    match consistency {
        ReadConsistency::Linearizable => "linearizable",
        ReadConsistency::Stale => "stale",
    }
}

impl BenchOptions {
    /// Refuses options that cannot run (named in the message).
    pub fn validate(&self) -> Result<(), String> {
        if self.clients == 0 || self.clients > CLIENTS_MAX {
            return Err(format!("--clients must be 1 to {CLIENTS_MAX}"));
        }
        if self.connections == 0 || self.connections > self.clients {
            return Err("--connections must be 1 to --clients".into());
        }
        if self.total == Some(0) {
            return Err("--total must be at least 1".into());
        }
        if self.duration.is_some_and(|d| d.is_zero()) {
            return Err("--duration must be more than 0".into());
        }
        if self.keyspace == 0 {
            return Err("--keyspace must be at least 1".into());
        }
        let digits = (self.keyspace - 1).to_string().len();
        if self.key_size < digits + 1 || self.key_size > KEY_BYTES_MAX {
            return Err(format!(
                "--key-size must be {} to {KEY_BYTES_MAX} bytes (a keyspace of {} needs {digits} \
                 digits after the 'b' prefix)",
                digits + 1,
                self.keyspace
            ));
        }
        if self.value_size > VALUE_BYTES_MAX {
            return Err(format!(
                "--value-size must be at most {VALUE_BYTES_MAX} bytes"
            ));
        }
        if self.read_percent > 100 {
            return Err("--read-percent must be 0 to 100".into());
        }
        if self.watchers == 0 || self.watchers > CLIENTS_MAX {
            return Err(format!("--watchers must be 1 to {CLIENTS_MAX}"));
        }
        if self.protocol == Protocol::Etcd && self.endpoints.is_empty() {
            return Err("--protocol etcd needs --endpoints HOST:PORT,...".into());
        }
        Ok(())
    }

    /// The operation count the run stops at, if any.
    pub fn total_ops(&self) -> Option<u64> {
        match (self.total, self.duration) {
            (None, None) => Some(10_000),
            (total, _) => total,
        }
    }

    /// The key with number `n`: `b` then `n` zero-padded to `--key-size` bytes.
    pub fn key(&self, n: u64) -> Vec<u8> {
        format!("b{:0width$}", n, width = self.key_size - 1).into_bytes()
    }
}

/// Hands out operation numbers until the run is over.
struct Budget {
    issued: AtomicU64,
    total: Option<u64>,
    deadline: Option<Instant>,
    stop: AtomicBool,
}

impl Budget {
    fn next(&self) -> Option<u64> {
        if self.stop.load(Ordering::Relaxed) || self.deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        match self.total {
            Some(total) if n >= total => None,
            _ => Some(n),
        }
    }
}

/// What one client task counted.
struct Tally {
    histogram: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    hits: u64,
    conflicts: u64,
}

/// Runs a workload against `nodes` as the client `key`; `progress` is called with the operations done so far
/// about ten times a second.
pub async fn run(
    workload: Workload,
    options: BenchOptions,
    key: &iroh::SecretKey,
    nodes: &[NodeAddress],
    progress: impl Fn(u64),
) -> Result<Report, String> {
    options.validate()?;
    if workload == Workload::Watch && options.value_size < 8 {
        // The watch workload stamps each value with when it was sent.
        return Err("--value-size must be at least 8 bytes for the watch workload".into());
    }
    if options.protocol == Protocol::Etcd && matches!(workload, Workload::Sql | Workload::Watch) {
        return Err(format!(
            "the {} workload speaks Aspen's protocol only (not --protocol etcd)",
            workload_name(workload)
        ));
    }
    let total = options.total_ops();
    let mut connections = Vec::with_capacity(options.connections);
    for i in 0..options.connections {
        connections.push(match options.protocol {
            Protocol::Aspen => {
                let client = Client::connect_with_key(key.clone(), nodes)
                    .await
                    .map_err(|e| e.to_string())?
                    .prefer(i % nodes.len());
                Conn::Aspen(Arc::new(client))
            }
            Protocol::Etcd => Conn::Etcd(Box::new(
                etcd::connect(&options.endpoints[i % options.endpoints.len()]).await?,
            )),
        });
    }
    // Aspen's nodes report their CPU time and memory; etcd's endpoints do not.
    let reporter = match &connections[0] {
        Conn::Aspen(client) => Some(client.clone()),
        Conn::Etcd(_) => None,
    };
    let cpu_before = process_usage(reporter.as_deref(), nodes).await;
    let start = Instant::now();
    let watching = Arc::new(AtomicBool::new(true));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(options.watchers.max(1));
    let mut watchers = tokio::task::JoinSet::new();
    if workload == Workload::Watch {
        for i in 0..options.watchers {
            let Conn::Aspen(client) = connections[i % connections.len()].clone() else {
                unreachable!("the watch workload was refused for --protocol etcd");
            };
            let (watching, ready) = (watching.clone(), ready_tx.clone());
            watchers.spawn(async move { watch_loop(&client, start, &watching, ready).await });
        }
        // The writers start once every watcher is set up.
        for _ in 0..options.watchers {
            if ready_rx.recv().await.is_none() {
                break;
            }
        }
        if let Some(Ok(Err(error))) = watchers.try_join_next() {
            return Err(error);
        }
    }
    let budget = Arc::new(Budget {
        issued: AtomicU64::new(0),
        total,
        deadline: options.duration.map(|d| start + d),
        stop: AtomicBool::new(false),
    });
    let done = Arc::new(AtomicU64::new(0));
    let options = Arc::new(options);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..options.clients {
        let client = connections[i % connections.len()].clone();
        let (budget, done, options) = (budget.clone(), done.clone(), options.clone());
        tasks.spawn(async move {
            client_loop(workload, i, &client, &budget, &done, &options, start).await
        });
    }
    let mut tallies = Vec::with_capacity(options.clients);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                Some(Ok(tally)) => tallies.push(tally),
                Some(Err(error)) => {
                    budget.stop.store(true, Ordering::Relaxed);
                    return Err(format!("a bench client failed: {error}"));
                }
                None => break,
            },
            _ = tick.tick() => progress(done.load(Ordering::Relaxed)),
        }
    }
    let elapsed = start.elapsed();
    progress(done.load(Ordering::Relaxed));
    // Watchers get a moment to receive the last puts' events.
    tokio::time::sleep(Duration::from_millis(500)).await;
    watching.store(false, Ordering::Relaxed);
    let (mut events, mut event_latency) = (0u64, new_histogram());
    while let Some(joined) = watchers.join_next().await {
        let (count, histogram) = joined.map_err(|e| format!("a watcher failed: {e}"))??;
        events += count;
        event_latency
            .add(&histogram)
            .map_err(|e| format!("histogram: {e}"))?;
    }
    let mut histogram = new_histogram();
    let mut errors = BTreeMap::new();
    let (mut hits, mut conflicts) = (0, 0);
    for tally in tallies {
        histogram
            .add(&tally.histogram)
            .map_err(|e| format!("histogram: {e}"))?;
        for (kind, count) in tally.errors {
            *errors.entry(kind).or_insert(0) += count;
        }
        hits += tally.hits;
        conflicts += tally.conflicts;
    }
    let cpu_after = process_usage(reporter.as_deref(), nodes).await;
    let node_count = match options.protocol {
        Protocol::Aspen => nodes.len(),
        Protocol::Etcd => options.endpoints.len(),
    };
    let processes = cpu_after
        .iter()
        .filter_map(|(node_id, after)| {
            let before = cpu_before.get(node_id)?;
            Some(NodeProcess {
                node_id: *node_id,
                cpu_ms: after.cpu_ms.saturating_sub(before.cpu_ms),
                rss_bytes: after.rss_bytes,
            })
        })
        .collect();
    Ok(Report {
        processes,
        workload,
        options: Arc::unwrap_or_clone(options),
        nodes: node_count,
        elapsed,
        histogram,
        errors,
        hits,
        conflicts,
        events,
        event_latency,
    })
}

/// One watcher of the watch workload: counts the events it gets and records how long after
/// its put was sent each arrived (the put's value starts with that instant, in microseconds
/// since `start`), until `watching` is cleared.
async fn watch_loop(
    client: &Client,
    start: Instant,
    watching: &AtomicBool,
    ready: tokio::sync::mpsc::Sender<()>,
) -> Result<(u64, Histogram<u64>), String> {
    let mut watcher = client
        .watch(
            crate::api::KeyRange::prefix(b"b"),
            0,
            crate::api::WatchOptions {
                progress_ms: 100,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| format!("watcher: {e}"))?;
    let _ = ready.send(()).await;
    drop(ready);
    let (mut events, mut histogram) = (0u64, new_histogram());
    while watching.load(Ordering::Relaxed) {
        let batch = watcher.next().await.map_err(|e| format!("watcher: {e}"))?;
        let now = start.elapsed().as_micros() as u64;
        for event in batch.events {
            events += 1;
            let sent = event
                .kv
                .as_ref()
                .and_then(|kv| kv.value.get(..8))
                .map(|bytes| u64::from_le_bytes(bytes.try_into().expect("8 bytes")));
            if let Some(sent) = sent {
                histogram.saturating_record(now.saturating_sub(sent).clamp(1, LATENCY_MAX_US));
            }
        }
    }
    Ok((events, histogram))
}

/// Each node's process usage from its status (nodes that do not answer are left out).
async fn process_usage(
    client: Option<&Client>,
    nodes: &[NodeAddress],
) -> BTreeMap<NodeId, ProcessUsage> {
    let mut usage = BTreeMap::new();
    let Some(client) = client else {
        return usage;
    };
    for node in nodes {
        if let Ok(status) = client.status_of(node).await
            && let Some(process) = status.process
        {
            usage.insert(status.node_id, process);
        }
    }
    usage
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("valid histogram bounds")
}

/// How an operation ended, besides success.
enum Outcome {
    Done,
    Hit,
    Conflict,
}

async fn client_loop(
    workload: Workload,
    index: usize,
    conn: &Conn,
    budget: &Budget,
    done: &AtomicU64,
    options: &BenchOptions,
    start: Instant,
) -> Tally {
    let mut tally = Tally {
        histogram: new_histogram(),
        errors: BTreeMap::new(),
        hits: 0,
        conflicts: 0,
    };
    let mut rng = SmallRng::seed_from_u64(index as u64);
    let value = vec![b'v'; options.value_size];
    let consistency = Consistency::from(options.consistency);
    // txn-cas: the mod revision this client last saw per key (0: missing).
    let mut seen: BTreeMap<u64, u64> = BTreeMap::new();
    while let Some(n) = budget.next() {
        let started = Instant::now();
        let result: Result<Outcome, String> = match workload {
            Workload::Put => {
                conn.put(options.key(n % options.keyspace), value.clone())
                    .await
            }
            Workload::Watch => {
                // The value starts with when it was sent, for the watchers' latency.
                let mut stamped = value.clone();
                let sent = (started.duration_since(start).as_micros() as u64).to_le_bytes();
                let len = stamped.len().min(8);
                stamped[..len].copy_from_slice(&sent[..len]);
                conn.put(options.key(n % options.keyspace), stamped).await
            }
            Workload::Get => {
                conn.get(options.key(n % options.keyspace), consistency)
                    .await
            }
            Workload::Mixed => {
                let key = options.key(rng.random_range(0..options.keyspace));
                if rng.random_range(0..100u8) < options.read_percent {
                    conn.get(key, consistency).await
                } else {
                    conn.put(key, value.clone()).await
                }
            }
            Workload::TxnCas => {
                let k = rng.random_range(0..options.keyspace);
                let revision = seen.get(&k).copied().unwrap_or(0);
                conn.cas(options.key(k), revision, &value)
                    .await
                    .map(|(outcome, revision)| {
                        seen.insert(k, revision);
                        outcome
                    })
            }
            Workload::Sql => conn.sql(&options.query, consistency).await,
        };
        let micros = (started.elapsed().as_micros() as u64).clamp(1, LATENCY_MAX_US);
        match result {
            Ok(outcome) => {
                tally.histogram.saturating_record(micros);
                match outcome {
                    Outcome::Done => {}
                    Outcome::Hit => tally.hits += 1,
                    Outcome::Conflict => tally.conflicts += 1,
                }
            }
            Err(error) => *tally.errors.entry(error_kind(&error)).or_insert(0) += 1,
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
    tally
}

/// One connection of a run: an Aspen client (a QUIC endpoint), or an etcd v3 client of one
/// endpoint (`--protocol etcd`). Failures are their messages.
#[derive(Clone)]
enum Conn {
    Aspen(Arc<Client>),
    Etcd(Box<etcd_client::KvClient>),
}

impl Conn {
    async fn put(&self, key: Vec<u8>, value: Vec<u8>) -> Result<Outcome, String> {
        match self {
            Conn::Aspen(client) => drop(client.put(key, value).await.map_err(|e| e.to_string())?),
            Conn::Etcd(kv) => etcd::put(kv, key, value).await?,
        }
        Ok(Outcome::Done)
    }

    /// A hit when the key was found.
    async fn get(&self, key: Vec<u8>, consistency: Consistency) -> Result<Outcome, String> {
        let found = match self {
            Conn::Aspen(client) => client
                .get_with(key, consistency)
                .await
                .map_err(|e| e.to_string())?
                .is_some(),
            Conn::Etcd(kv) => etcd::get(kv, key, consistency == Consistency::Stale).await?,
        };
        Ok(if found { Outcome::Hit } else { Outcome::Done })
    }

    /// Put `value` at `key` if its mod revision is `revision`, else read it; returns the
    /// outcome and the key's mod revision afterwards.
    async fn cas(
        &self,
        key: Vec<u8>,
        revision: u64,
        value: &[u8],
    ) -> Result<(Outcome, u64), String> {
        let (swapped, now) = match self {
            Conn::Aspen(client) => cas(client, key, revision, value)
                .await
                .map_err(|e| e.to_string())?,
            Conn::Etcd(kv) => etcd::cas(kv, key, revision, value).await?,
        };
        Ok((
            if swapped {
                Outcome::Hit
            } else {
                Outcome::Conflict
            },
            now,
        ))
    }

    async fn sql(&self, query: &str, consistency: Consistency) -> Result<Outcome, String> {
        match self {
            Conn::Aspen(client) => client
                .sql_with(query, consistency)
                .await
                .map(|_| Outcome::Done)
                .map_err(|e| e.to_string()),
            Conn::Etcd(_) => Err("sql speaks Aspen's protocol only".into()),
        }
    }
}

/// Put `value` at `key` if its mod revision is `revision`, else read it: whether it swapped,
/// and the key's mod revision afterwards.
async fn cas(
    client: &Client,
    key: Vec<u8>,
    revision: u64,
    value: &[u8],
) -> Result<(bool, u64), ClientError> {
    let txn = Txn {
        compares: vec![Compare {
            key: key.clone(),
            op: CompareOp::Equal,
            target: CompareTarget::ModRevision(revision),
        }],
        success: vec![TxnOp::Put(Put::new(key.clone(), value.to_vec()))],
        failure: vec![TxnOp::Get { key }],
    };
    let written = client.txn(txn).await?;
    match written.output {
        Output::Txn {
            succeeded: true, ..
        } => Ok((true, written.revision)),
        Output::Txn {
            succeeded: false,
            results,
        } => {
            let now = match results.first() {
                Some(Output::Get { kv: Some(kv) }) => kv.mod_revision,
                _ => 0,
            };
            Ok((false, now))
        }
        other => Err(ClientError::Protocol(format!("{other:?}"))),
    }
}

/// A failure's kind: the error message without the figures that differ between requests.
fn error_kind(text: &str) -> String {
    let kind: String = text
        .chars()
        .map(|c| if c.is_ascii_digit() { '#' } else { c })
        .take(120)
        .collect();
    kind
}
