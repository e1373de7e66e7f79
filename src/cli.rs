//! The `aspen` command line (etcdctl-like): argument definitions and what each command does.
//! `src/bin/aspen.rs` only parses and calls [`run`]. Every command prints its answer on
//! stdout (as text, or JSON with `--output json`) and exits 0; on error it prints one line on
//! stderr and exits 1 (2 for unusable arguments).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{
    Compare, CompareOp, CompareTarget, KeyRange, KeyValue, NodeId, Output, Put, Txn, TxnOp,
};
pub use crate::bench::ReadConsistency;
use crate::client::{Client, RangeOptions};
use crate::net::endpoint::{NodeAddress, read_addr_file};

#[derive(Debug, Parser)]
#[command(name = "aspen", version, about = "Talk to an Aspen cluster")]
pub struct Cli {
    /// Node addresses `ENDPOINT_ID@IP:PORT`, comma-separated (any nodes of the cluster).
    #[arg(long, env = "ASPEN_NODE", value_delimiter = ',', global = true)]
    pub node: Vec<String>,
    /// Read a node's address from DIR/node.addr (repeatable); used when --node is not given.
    #[arg(long, global = true)]
    pub data_dir: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "table", global = true)]
    pub output: OutputFormat,
    #[command(subcommand)]
    pub command: CliCommand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    /// CSV with a header row (`aspen sql` only).
    Csv,
}

#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Write VALUE at KEY.
    Put {
        key: String,
        value: String,
        /// Delete the key after this long (e.g. 10s, 500ms, 2m).
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
        /// Attach the key to this lease.
        #[arg(long)]
        lease: Option<u64>,
        /// Print the entry the put replaced.
        #[arg(long)]
        prev_kv: bool,
    },
    /// Read KEY, or a range of keys.
    Get {
        key: String,
        /// Every key starting with KEY.
        #[arg(long)]
        prefix: bool,
        /// Keys from KEY up to (not including) this one.
        #[arg(long, conflicts_with = "prefix")]
        range_end: Option<String>,
        /// At most this many entries (0: all).
        #[arg(long, default_value_t = 0)]
        limit: u64,
        #[arg(long)]
        keys_only: bool,
        /// Print only how many keys there are.
        #[arg(long)]
        count_only: bool,
        #[arg(long, value_enum, default_value = "linearizable")]
        consistency: ReadConsistency,
    },
    /// Delete KEY, or a range of keys; prints how many were deleted.
    Del {
        key: String,
        #[arg(long)]
        prefix: bool,
        #[arg(long, conflicts_with = "prefix")]
        range_end: Option<String>,
    },
    /// If every --compare holds run the --success ops, else the --failure ops, atomically.
    ///
    /// Compare: `value(KEY) = V`, `version(KEY) > N`, `create(KEY) = N`, `mod(KEY) < N`,
    /// `exists(KEY) = true` (operators = != < >). Op: `put KEY VALUE`, `del KEY`,
    /// `delprefix PREFIX`, `get KEY`. A --file holds the same as JSON:
    /// {"compare": [..], "success": [..], "failure": [..]}.
    Txn {
        #[arg(long = "compare")]
        compares: Vec<String>,
        #[arg(long)]
        success: Vec<String>,
        #[arg(long)]
        failure: Vec<String>,
        #[arg(long, conflicts_with_all = ["compares", "success", "failure"])]
        file: Option<PathBuf>,
    },
    /// Leases: keys attached to one are deleted when it is revoked or expires.
    #[command(subcommand)]
    Lease(LeaseCommand),
    /// Membership and status.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Run a read-only SQL query over tables `kv` (key, value, version, create_revision,
    /// mod_revision, lease_id, expires_at), `kv_bytes` (key and value as binary), `leases`
    /// (id, ttl_ms, remaining_ms, key_count) and `vaults` (name, key_count, total_bytes,
    /// created_revision, updated_revision).
    Sql {
        query: String,
        #[arg(long, value_enum, default_value = "linearizable")]
        consistency: ReadConsistency,
    },
    /// Vaults: key namespaces `vault/NAME/...` with metadata kept as keys change.
    #[command(subcommand)]
    Vault(VaultCommand),
    /// Load the cluster and measure: throughput, latency percentiles (p50, p90, p99, p99.9,
    /// max) and failures. Clients spread over the --node addresses; one run is bounded by
    /// --total (default 10000) and/or --duration.
    Bench {
        #[arg(value_enum)]
        workload: crate::bench::Workload,
        #[command(flatten)]
        options: crate::bench::BenchOptions,
    },
    /// Operations on one node, over its HTTP admin API (`/admin/*`).
    Admin {
        /// The node's HTTP address (`http.address`), e.g. 127.0.0.1:9180; default: read from
        /// DIR/http.addr of the first --data-dir.
        #[arg(long, env = "ASPEN_HTTP")]
        http: Option<String>,
        /// The node's `http.admin_token`.
        #[arg(long, env = "ASPEN_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum VaultCommand {
    /// Every vault: keys, bytes, created and updated revision (from metadata, no key scan).
    List,
}

#[derive(Debug, Clone, Subcommand)]
pub enum AdminCommand {
    /// Write a backup of the node's state (keys, revisions, leases) to FILE, taken from one
    /// read transaction while writes go on; checked as it arrives (a progress bar shows keys).
    Backup {
        #[arg(long)]
        out: PathBuf,
    },
    /// Build a Raft snapshot now; the log behind it is purged (keeping raft.log_entries_kept).
    Snapshot,
    /// Reclaim the free space in the node's database file (after deletes and log purges);
    /// reads and writes on that node wait while it runs. Prints the sizes and the wait.
    Compact,
    /// Stop the node gracefully: as the leader it first lets followers catch up; the last
    /// commit is durable, so a restart replays nothing.
    Shutdown,
}

#[derive(Debug, Subcommand)]
pub enum LeaseCommand {
    /// Grant a lease of TTL (e.g. 10s); prints its id.
    Grant {
        #[arg(value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Ask for this id (default: the cluster picks one).
        #[arg(long)]
        id: Option<u64>,
    },
    /// Revoke a lease and delete its keys.
    Revoke { id: u64 },
    /// Push a lease's deadline one TTL ahead.
    Keepalive { id: u64 },
    /// Live leases.
    List,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Form a new cluster: every --member ID=ADDRESS is told the same list.
    Init {
        #[arg(long = "member", required = true)]
        members: Vec<String>,
    },
    /// Add a node as a learner (it receives the log, or a snapshot, but does not vote).
    AddLearner { id: NodeId, address: String },
    /// Make a learner a voter.
    Promote { id: NodeId },
    /// Remove a voter or learner.
    Remove { id: NodeId },
    /// The answering node's view: leader, term, log and applied index, membership.
    Status,
    /// Members with their addresses and roles.
    Members,
}

/// Runs a parsed command line; returns the process exit code.
pub async fn run(cli: Cli) -> ExitCode {
    if cli.output == OutputFormat::Csv && !matches!(cli.command, CliCommand::Sql { .. }) {
        eprintln!("Error: --output csv is only for `aspen sql`");
        return ExitCode::from(2);
    }
    match execute(&cli).await {
        Ok(answer) => {
            match cli.output {
                OutputFormat::Json => println!("{}", answer.json),
                OutputFormat::Table => {
                    if !answer.text.is_empty() {
                        println!("{}", answer.text.trim_end());
                    }
                }
                OutputFormat::Csv => print!("{}", answer.csv.unwrap_or_default()),
            }
            if let Some(note) = answer.note {
                eprintln!("{note}");
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("Error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// A command's answer in both output formats.
#[derive(Default)]
struct Answer {
    text: String,
    json: Value,
    /// The answer as CSV, for commands that print rows.
    csv: Option<String>,
    /// Printed on stderr after the answer in any format (a truncated result).
    note: Option<String>,
}

impl Answer {
    fn new(text: impl Into<String>, json: Value) -> Answer {
        Answer {
            text: text.into(),
            json,
            ..Answer::default()
        }
    }

    fn ok(json: Value) -> Answer {
        Answer::new("OK", json)
    }
}

async fn execute(cli: &Cli) -> Result<Answer, String> {
    if let CliCommand::Cluster(ClusterCommand::Init { members }) = &cli.command {
        return cluster_init(members).await;
    }
    // Admin commands talk to one node's HTTP address, not to the cluster.
    if let CliCommand::Admin {
        http,
        token,
        command,
    } = &cli.command
    {
        return admin_over_http(&cli.data_dir, http.as_deref(), token.clone(), command).await;
    }
    if let CliCommand::Bench { workload, options } = &cli.command {
        return bench(&node_addresses(cli)?, *workload, options.clone()).await;
    }
    let client = Client::connect(&node_addresses(cli)?)
        .await
        .map_err(|e| e.to_string())?;
    let e = |e: crate::client::Error| e.to_string();
    match &cli.command {
        CliCommand::Put {
            key,
            value,
            ttl,
            lease,
            prev_kv,
        } => {
            let put = Put {
                ttl_ms: ttl.map(|t| t.as_millis().max(1) as u64),
                lease: *lease,
                prev_kv: *prev_kv,
                ..Put::new(key.as_str(), value.as_str())
            };
            let written = client.put_with(put).await.map_err(e)?;
            let prev = match &written.output {
                Output::Put { prev } => prev.clone(),
                _ => None,
            };
            let mut text = "OK".to_string();
            if let Some(prev) = &prev {
                text.push_str(&format!("\n{}", kv_text(prev, false)));
            }
            Ok(Answer::new(
                text,
                json!({"revision": written.revision, "prev_kv": prev.as_ref().map(kv_json)}),
            ))
        }
        CliCommand::Get {
            key,
            prefix,
            range_end,
            limit,
            keys_only,
            count_only,
            consistency,
        } => {
            let options = RangeOptions {
                limit: *limit,
                keys_only: *keys_only,
                count_only: *count_only,
                consistency: (*consistency).into(),
            };
            let range = key_range(key, *prefix, range_end.as_deref());
            let page = if *count_only {
                client.range_page(range, &options).await
            } else {
                client.range(range, &options).await
            }
            .map_err(e)?;
            let text = if *count_only {
                page.count.to_string()
            } else {
                page.kvs
                    .iter()
                    .map(|kv| kv_text(kv, *keys_only))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            Ok(Answer::new(
                text,
                json!({
                    "revision": page.revision,
                    "count": page.count,
                    "more": page.continuation.is_some(),
                    "kvs": page.kvs.iter().map(kv_json).collect::<Vec<_>>(),
                }),
            ))
        }
        CliCommand::Del {
            key,
            prefix,
            range_end,
        } => {
            let written = if *prefix || range_end.is_some() {
                client
                    .delete_range(key_range(key, *prefix, range_end.as_deref()))
                    .await
            } else {
                client.delete(key.as_str()).await
            }
            .map_err(e)?;
            let deleted = match written.output {
                Output::Delete { deleted, .. } | Output::DeleteRange { deleted } => deleted,
                other => return Err(format!("unexpected answer: {other:?}")),
            };
            Ok(Answer::new(
                deleted.to_string(),
                json!({"revision": written.revision, "deleted": deleted}),
            ))
        }
        CliCommand::Txn {
            compares,
            success,
            failure,
            file,
        } => {
            let txn = match file {
                Some(path) => txn_from_file(path)?,
                None => parse_txn(compares, success, failure)?,
            };
            let written = client.txn(txn).await.map_err(e)?;
            let Output::Txn { succeeded, results } = written.output else {
                return Err(format!("unexpected answer: {:?}", written.output));
            };
            let mut lines = vec![if succeeded { "SUCCESS" } else { "FAILURE" }.to_string()];
            let mut gets = Vec::new();
            for result in &results {
                if let Output::Get { kv } = result {
                    if let Some(kv) = kv {
                        lines.push(kv_text(kv, false));
                    }
                    gets.push(kv.as_ref().map(kv_json));
                }
            }
            Ok(Answer::new(
                lines.join("\n"),
                json!({"revision": written.revision, "succeeded": succeeded, "gets": gets}),
            ))
        }
        CliCommand::Lease(command) => lease(&client, command).await,
        CliCommand::Admin {
            http,
            token,
            command,
        } => admin_over_http(&cli.data_dir, http.as_deref(), token.clone(), command).await,
        CliCommand::Bench { workload, options } => {
            bench(&node_addresses(cli)?, *workload, options.clone()).await
        }
        CliCommand::Vault(VaultCommand::List) => {
            let vaults = client.vault_list().await.map_err(e)?;
            let mut table = comfy_table::Table::new();
            table.load_preset(comfy_table::presets::ASCII_MARKDOWN);
            table.set_header(["vault", "keys", "bytes", "created", "updated"]);
            for vault in &vaults {
                let m = &vault.meta;
                table.add_row([
                    vault.name.clone(),
                    m.key_count.to_string(),
                    m.total_bytes.to_string(),
                    m.created_revision.to_string(),
                    m.updated_revision.to_string(),
                ]);
            }
            let json: Vec<Value> = vaults
                .iter()
                .map(|v| {
                    json!({
                        "name": v.name,
                        "keys": v.meta.key_count,
                        "bytes": v.meta.total_bytes,
                        "created_revision": v.meta.created_revision,
                        "updated_revision": v.meta.updated_revision,
                    })
                })
                .collect();
            Ok(Answer::new(table.to_string(), Value::Array(json)))
        }
        CliCommand::Cluster(command) => cluster(&client, command).await,
        CliCommand::Sql { query, consistency } => {
            let result = client
                .sql_with(query, (*consistency).into())
                .await
                .map_err(e)?;
            Ok(Answer {
                text: result.to_table(),
                json: result.to_json(),
                csv: Some(result.to_csv()?),
                note: result
                    .truncated
                    .as_ref()
                    .map(|reason| format!("note: result truncated: {reason}")),
            })
        }
    }
}

fn node_addresses(cli: &Cli) -> Result<Vec<NodeAddress>, String> {
    let mut addresses = Vec::new();
    for node in &cli.node {
        addresses.push(node.parse::<NodeAddress>().map_err(|e| e.to_string())?);
    }
    if addresses.is_empty() {
        for dir in &cli.data_dir {
            addresses.push(read_addr_file(dir)?);
        }
    }
    if addresses.is_empty() {
        return Err(
            "no node given: use --node ENDPOINT_ID@IP:PORT, ASPEN_NODE, or --data-dir DIR".into(),
        );
    }
    Ok(addresses)
}

fn key_range(key: &str, prefix: bool, range_end: Option<&str>) -> KeyRange {
    match (prefix, range_end) {
        (true, _) => KeyRange::prefix(key.as_bytes()),
        (false, Some(end)) => KeyRange {
            start: key.as_bytes().to_vec(),
            end: Some(end.as_bytes().to_vec()),
        },
        (false, None) => KeyRange::single(key.as_bytes()),
    }
}

fn kv_text(kv: &KeyValue, keys_only: bool) -> String {
    let key = String::from_utf8_lossy(&kv.key);
    if keys_only {
        key.into_owned()
    } else {
        format!("{key}\n{}", String::from_utf8_lossy(&kv.value))
    }
}

fn kv_json(kv: &KeyValue) -> Value {
    json!({
        "key": String::from_utf8_lossy(&kv.key),
        "value": String::from_utf8_lossy(&kv.value),
        "version": kv.version,
        "create_revision": kv.create_revision,
        "mod_revision": kv.mod_revision,
        "lease": kv.lease,
        "expires_at_ms": kv.expires_at_ms,
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct TxnFile {
    compare: Vec<String>,
    success: Vec<String>,
    failure: Vec<String>,
}

fn txn_from_file(path: &std::path::Path) -> Result<Txn, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let file: TxnFile =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_txn(&file.compare, &file.success, &file.failure)
}

/// Parses a transaction from the `aspen txn` expression syntax.
pub fn parse_txn(
    compares: &[String],
    success: &[String],
    failure: &[String],
) -> Result<Txn, String> {
    Ok(Txn {
        compares: compares
            .iter()
            .map(|c| parse_compare(c))
            .collect::<Result<_, _>>()?,
        success: success
            .iter()
            .map(|o| parse_op(o))
            .collect::<Result<_, _>>()?,
        failure: failure
            .iter()
            .map(|o| parse_op(o))
            .collect::<Result<_, _>>()?,
    })
}

fn parse_compare(text: &str) -> Result<Compare, String> {
    let bad = |why: &str| format!("compare {text:?}: {why} (expected e.g. `value(KEY) = V`)");
    let (field, rest) = text.trim().split_once('(').ok_or_else(|| bad("no '('"))?;
    let (key, rest) = rest.split_once(')').ok_or_else(|| bad("no ')'"))?;
    let rest = rest.trim_start();
    let (op, target) = [
        ("!=", CompareOp::NotEqual),
        ("=", CompareOp::Equal),
        ("<", CompareOp::Less),
        (">", CompareOp::Greater),
    ]
    .into_iter()
    .find_map(|(symbol, op)| rest.strip_prefix(symbol).map(|t| (op, t.trim())))
    .ok_or_else(|| bad("the operator must be one of = != < >"))?;
    let number = || {
        target
            .parse::<u64>()
            .map_err(|_| bad("the target must be a number"))
    };
    let target = match field.trim() {
        "value" => CompareTarget::Value(target.as_bytes().to_vec()),
        "version" => CompareTarget::Version(number()?),
        "create" => CompareTarget::CreateRevision(number()?),
        "mod" => CompareTarget::ModRevision(number()?),
        "exists" => CompareTarget::Exists(
            target
                .parse()
                .map_err(|_| bad("the target must be true or false"))?,
        ),
        other => {
            return Err(bad(&format!(
                "unknown field {other:?} (value, version, create, mod, exists)"
            )));
        }
    };
    Ok(Compare {
        key: key.as_bytes().to_vec(),
        op,
        target,
    })
}

fn parse_op(text: &str) -> Result<TxnOp, String> {
    let bad = |why: &str| {
        format!("op {text:?}: {why} (put KEY VALUE, del KEY, delprefix PREFIX, get KEY)")
    };
    let mut words = text.trim().splitn(3, ' ');
    let verb = words.next().unwrap_or_default();
    let key = words
        .next()
        .ok_or_else(|| bad("no key"))?
        .as_bytes()
        .to_vec();
    let rest = words.next();
    match (verb, rest) {
        ("put", Some(value)) => Ok(TxnOp::Put(Put::new(key, value))),
        ("put", None) => Err(bad("no value")),
        ("del", None) => Ok(TxnOp::Delete {
            key,
            prev_kv: false,
        }),
        ("delprefix", None) => Ok(TxnOp::DeleteRange(KeyRange::prefix(&key))),
        ("get", None) => Ok(TxnOp::Get { key }),
        ("del" | "delprefix" | "get", Some(_)) => Err(bad("too many words")),
        _ => Err(bad("unknown operation")),
    }
}

fn ttl_text(ms: u64) -> String {
    humantime::format_duration(Duration::from_millis(ms)).to_string()
}

async fn lease(client: &Client, command: &LeaseCommand) -> Result<Answer, String> {
    let e = |e: crate::client::Error| e.to_string();
    let lease_json = |l: crate::client::Lease| json!({"id": l.id, "ttl_ms": l.ttl_ms, "deadline_ms": l.deadline_ms});
    match command {
        LeaseCommand::Grant { ttl, id } => {
            let ttl_ms = ttl.as_millis().max(1) as u64;
            let lease = client
                .lease_grant(id.unwrap_or(0), ttl_ms)
                .await
                .map_err(e)?;
            Ok(Answer::new(
                format!(
                    "lease {} granted with TTL({})",
                    lease.id,
                    ttl_text(lease.ttl_ms)
                ),
                lease_json(lease),
            ))
        }
        LeaseCommand::Revoke { id } => {
            let deleted = client.lease_revoke(*id).await.map_err(e)?;
            Ok(Answer::new(
                format!("lease {id} revoked ({deleted} keys deleted)"),
                json!({"id": id, "keys_deleted": deleted}),
            ))
        }
        LeaseCommand::Keepalive { id } => {
            let lease = client.lease_keepalive(*id).await.map_err(e)?;
            Ok(Answer::new(
                format!(
                    "lease {} kept alive with TTL({})",
                    lease.id,
                    ttl_text(lease.ttl_ms)
                ),
                lease_json(lease),
            ))
        }
        LeaseCommand::List => {
            let leases = client.lease_list().await.map_err(e)?;
            let mut lines = vec![format!("found {} leases", leases.len())];
            lines.extend(leases.iter().map(|l| {
                format!(
                    "{} ttl={} remaining={}",
                    l.id,
                    ttl_text(l.ttl_ms),
                    ttl_text(l.remaining_ms)
                )
            }));
            Ok(Answer::new(lines.join("\n"), json!(leases.iter().map(|l| json!({"id": l.id, "ttl_ms": l.ttl_ms, "remaining_ms": l.remaining_ms})).collect::<Vec<_>>())))
        }
    }
}

async fn cluster_init(members: &[String]) -> Result<Answer, String> {
    let mut list = BTreeMap::new();
    for member in members {
        let (id, address) = member
            .split_once('=')
            .ok_or_else(|| format!("member {member:?}: expected ID=ENDPOINT_ID@IP:PORT"))?;
        let id: NodeId = id
            .parse()
            .map_err(|_| format!("member {member:?}: the id must be a number"))?;
        let address: NodeAddress = address.parse().map_err(|e| format!("member {id}: {e}"))?;
        list.insert(id, address);
    }
    let addresses: Vec<NodeAddress> = list.values().copied().collect();
    let client = Client::connect(&addresses)
        .await
        .map_err(|e| e.to_string())?;
    client
        .cluster_init(&list)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Answer::ok(
        json!({"members": list.iter().map(|(id, a)| json!({"id": id, "address": a.to_string()})).collect::<Vec<_>>()}),
    ))
}

async fn cluster(client: &Client, command: &ClusterCommand) -> Result<Answer, String> {
    let e = |e: crate::client::Error| e.to_string();
    match command {
        ClusterCommand::Init { members } => cluster_init(members).await,
        ClusterCommand::AddLearner { id, address } => {
            let address: NodeAddress = address
                .parse()
                .map_err(|e: crate::net::endpoint::AddressError| e.to_string())?;
            client.add_learner(*id, &address).await.map_err(e)?;
            Ok(Answer::ok(json!({"added_learner": id})))
        }
        ClusterCommand::Promote { id } => {
            client.promote(*id).await.map_err(e)?;
            Ok(Answer::ok(json!({"promoted": id})))
        }
        ClusterCommand::Remove { id } => {
            client.remove(*id).await.map_err(e)?;
            Ok(Answer::ok(json!({"removed": id})))
        }
        ClusterCommand::Status => {
            let s = client.status().await.map_err(e)?;
            let show = |v: Option<u64>| v.map_or("none".to_string(), |v| v.to_string());
            Ok(Answer::new(
                format!(
                    "node_id: {}\naddress: {}\nleader: {}\nterm: {}\nlast_log_index: {}\nlast_applied: {}\nmembers: {}",
                    s.node_id,
                    s.address,
                    show(s.leader),
                    s.term,
                    show(s.last_log_index),
                    show(s.last_applied),
                    s.members.len()
                ),
                serde_json::to_value(&s).map_err(|e| e.to_string())?,
            ))
        }
        ClusterCommand::Members => {
            let s = client.status().await.map_err(e)?;
            let text = s
                .members
                .iter()
                .map(|m| {
                    let role = if m.voter { "voter" } else { "learner" };
                    let leader = if Some(m.id) == s.leader {
                        " leader"
                    } else {
                        ""
                    };
                    format!("{} {} {role}{leader}", m.id, m.address)
                })
                .collect::<Vec<_>>()
                .join("\n");
            Ok(Answer::new(
                text,
                serde_json::to_value(&s.members).map_err(|e| e.to_string())?,
            ))
        }
    }
}

fn http_address_from(dirs: &[PathBuf]) -> Result<String, String> {
    let dir = dirs
        .first()
        .ok_or("no node HTTP address: give --http ADDRESS (or set ASPEN_HTTP) or --data-dir DIR")?;
    let path = dir.join(crate::node::HTTP_ADDR_FILE);
    std::fs::read_to_string(&path)
        .map(|text| text.trim().to_string())
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

async fn admin_over_http(
    data_dirs: &[PathBuf],
    http: Option<&str>,
    token: Option<String>,
    command: &AdminCommand,
) -> Result<Answer, String> {
    let http = match http {
        Some(http) => http.to_string(),
        None => http_address_from(data_dirs)?,
    };
    let command = command.clone();
    tokio::task::spawn_blocking(move || admin(&http, token, &command))
        .await
        .map_err(|e| format!("admin: {e}"))?
}

async fn bench(
    nodes: &[NodeAddress],
    workload: crate::bench::Workload,
    options: crate::bench::BenchOptions,
) -> Result<Answer, String> {
    options.validate()?;
    let bar = match options.total_ops() {
        Some(total) => indicatif::ProgressBar::new(total).with_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {bar:40} {pos}/{len} ops ({per_sec}, eta {eta})",
            )
            .expect("valid template"),
        ),
        None => indicatif::ProgressBar::new_spinner().with_style(
            indicatif::ProgressStyle::with_template("{spinner} {pos} ops ({per_sec}) {elapsed}")
                .expect("valid template"),
        ),
    };
    let result = crate::bench::run(workload, options, nodes, |done| bar.set_position(done)).await;
    bar.finish_and_clear();
    let report = result?;
    Ok(Answer::new(report.text(), report.json()))
}

/// Runs an admin command (blocking HTTP: call it off the async runtime).
fn admin(http: &str, token: Option<String>, command: &AdminCommand) -> Result<Answer, String> {
    let client = crate::admin::AdminClient::new(http, token)?;
    match command {
        AdminCommand::Backup { out } => {
            let bar = indicatif::ProgressBar::new(0).with_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} backup {bar:40} {pos}/{len} keys ({per_sec}, eta {eta})",
                )
                .expect("valid template"),
            );
            let result = client.backup(out, |done, total| {
                bar.set_length(total);
                bar.set_position(done);
            });
            bar.finish_and_clear();
            let (summary, bytes) = result?;
            Ok(Answer::new(
                format!(
                    "backup written to {}: {} keys, {} leases, revision {}, {bytes} bytes",
                    out.display(),
                    summary.keys,
                    summary.leases,
                    summary.revision
                ),
                json!({
                    "file": out.display().to_string(),
                    "keys": summary.keys,
                    "leases": summary.leases,
                    "revision": summary.revision,
                    "bytes": bytes,
                }),
            ))
        }
        AdminCommand::Snapshot => {
            let answer = client.post_json("snapshot")?;
            let index = |name: &str| {
                answer
                    .get(name)
                    .and_then(Value::as_u64)
                    .map_or("none".to_string(), |i| i.to_string())
            };
            Ok(Answer::new(
                format!(
                    "snapshot at log index {}; log purged up to {}",
                    index("snapshot_index"),
                    index("purged_index")
                ),
                answer,
            ))
        }
        AdminCommand::Compact => {
            let answer = client.post_json("compact")?;
            let bytes = |name: &str| {
                answer
                    .get(name)
                    .and_then(Value::as_u64)
                    .map_or("?".to_string(), |b| b.to_string())
            };
            let stalled = answer
                .get("stalled_ms")
                .and_then(Value::as_f64)
                .unwrap_or(0.0);
            Ok(Answer::new(
                format!(
                    "compacted: {} -> {} bytes; reads and writes waited {stalled:.1} ms",
                    bytes("bytes_before"),
                    bytes("bytes_after")
                ),
                answer,
            ))
        }
        AdminCommand::Shutdown => {
            let answer = client.post_json("shutdown")?;
            Ok(Answer::new("shutting down", answer))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the txn expression syntax parses every compare field and op, and names the
    // broken part of a bad expression.
    #[test]
    fn txn_syntax() {
        let txn = parse_txn(
            &[
                "value(k) = hello world".into(),
                "version(k) > 2".into(),
                "mod(k) != 7".into(),
                "exists(j) = false".into(),
                "create(k) < 9".into(),
            ],
            &["put k new value".into(), "get k".into()],
            &["del k".into(), "delprefix p/".into()],
        )
        .unwrap();
        assert_eq!(
            txn.compares[0].target,
            CompareTarget::Value(b"hello world".to_vec())
        );
        assert_eq!(txn.compares[1].op, CompareOp::Greater);
        assert_eq!(txn.compares[2].op, CompareOp::NotEqual);
        assert_eq!(txn.compares[3].target, CompareTarget::Exists(false));
        assert_eq!(txn.success[0], TxnOp::Put(Put::new("k", "new value")));
        assert_eq!(txn.failure[1], TxnOp::DeleteRange(KeyRange::prefix(b"p/")));
        assert!(
            parse_compare("size(k) = 1")
                .unwrap_err()
                .contains("unknown field")
        );
        assert!(
            parse_compare("version(k) = x")
                .unwrap_err()
                .contains("number")
        );
        assert!(parse_op("put k").unwrap_err().contains("no value"));
        assert!(
            parse_op("frob k")
                .unwrap_err()
                .contains("unknown operation")
        );
    }
}
