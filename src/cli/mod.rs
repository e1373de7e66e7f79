//! The `aspen` command line (etcdctl-like): the argument definitions and the dispatch here,
//! one file per command family (`kv`, `lease`, `cluster`, `admin`), the `txn` syntax and the
//! `output` forms. `src/bin/aspen.rs` only parses and calls [`run`]. Every command prints its
//! answer on stdout (text, JSON with `--output json`, CSV with `--output csv` for `aspen sql`)
//! and exits 0; on error it prints one line on stderr and exits 1 (2 for unusable arguments).
//! Never names storage, sql, the actors or the Raft log payload: it speaks `api` through the
//! client.

mod admin;
mod auth;
mod cluster;
mod kv;
mod lease;
mod output;
mod txn;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::api::NodeId;
pub use crate::bench::ReadConsistency;
use crate::client::Client;
use crate::net::endpoint::{NodeAddress, read_addr_file};
use crate::node::CLIENT_KEY_FILE;
use output::Answer;
pub use txn::parse_txn;

#[derive(Debug, Parser)]
#[command(name = "aspen", version, about = "Talk to an Aspen cluster")]
pub struct Cli {
    /// Node addresses `ENDPOINT_ID@IP:PORT`, comma-separated (any nodes of the cluster).
    #[arg(long, env = "ASPEN_NODE", value_delimiter = ',', global = true)]
    pub node: Vec<String>,
    /// Read a node's address from DIR/node.addr (repeatable); used when --node is not given.
    #[arg(long, global = true)]
    pub data_dir: Vec<PathBuf>,
    /// The client key file: this client's identity (created, mode 0600, when missing).
    /// Default: DIR/client.key of the first --data-dir when that exists (a node that formed a
    /// cluster alone made it root), else ~/.config/aspen/client.key.
    #[arg(long = "key", value_name = "FILE", env = "ASPEN_KEY", global = true)]
    pub key_file: Option<PathBuf>,
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
        /// Read the state as of revision N (from the history; refused once compacted).
        #[arg(long, value_name = "N")]
        rev: Option<u64>,
    },
    /// Print the changes of KEY (or a range) as they come, from revision --rev on (default:
    /// the next change), until interrupted: `PUT KEY (rev N)` and the value, `DELETE KEY (rev
    /// N)`; JSON lines with `--output json`. Resumes on another node when its node goes away,
    /// without losing or repeating an event.
    Watch {
        key: String,
        #[arg(long)]
        prefix: bool,
        #[arg(long, conflicts_with = "prefix")]
        range_end: Option<String>,
        /// Start at revision N (replays the history from there).
        #[arg(long, value_name = "N", default_value_t = 0)]
        rev: u64,
        /// Print each event's previous value too.
        #[arg(long)]
        prev_kv: bool,
        /// Only puts, or only deletes.
        #[arg(long, value_enum)]
        filter: Option<WatchOnly>,
        /// While nothing changes, print the revision reached this often (e.g. 5s).
        #[arg(long, value_parser = humantime::parse_duration)]
        progress: Option<std::time::Duration>,
        /// Without --rev, where "the next change" starts: after the cluster's revision as a
        /// linearizable read sees it (the default), or after the serving node's own revision
        /// (stale: no round trip to the leader, but a follower may be behind).
        #[arg(long, value_enum, default_value = "linearizable")]
        consistency: ReadConsistency,
    },
    /// Drop the history before revision REV (etcd's compaction; root only): reads at REV and
    /// later still work, older ones are refused. Not `aspen admin defrag`, which gives the
    /// database file's free space back.
    Compact { revision: u64 },
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
    /// Clients, roles and permissions (changes need the root role).
    #[command(subcommand)]
    Auth(AuthCommand),
    /// Load the cluster and measure: throughput, latency percentiles (p50, p90, p99, p99.9,
    /// max) and failures. Clients spread over the --node addresses (with `--protocol etcd`,
    /// over the etcd v3 `--endpoints`: Aspen's etcd API or etcd); one run is bounded by
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
        /// The node's admin token. Prefer the environment (ASPEN_ADMIN_TOKEN) or, on the
        /// node's machine, --data-dir (reads DIR/admin.token): a command line is visible to
        /// other local users.
        #[arg(long)]
        token: Option<String>,
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Who the cluster takes this client for: its id and roles.
    Whoami,
    /// Every client with its roles, every role with its grants.
    List,
    /// Clients: known by the endpoint id of their key (`aspen auth whoami` prints it).
    #[command(subcommand)]
    Client(AuthClientCommand),
    /// Roles: `root` may do everything; others grant read or readwrite on key prefixes.
    #[command(subcommand)]
    Role(AuthRoleCommand),
}

#[derive(Debug, Subcommand)]
pub enum AuthClientCommand {
    /// Let client ID in, with these roles (repeatable; `root` is a role).
    Add {
        id: String,
        #[arg(long = "role")]
        roles: Vec<String>,
    },
    /// Take a role from a client.
    Revoke {
        id: String,
        #[arg(long)]
        role: String,
    },
    /// Remove a client and all its roles.
    Remove { id: String },
}

#[derive(Debug, Subcommand)]
pub enum AuthRoleCommand {
    Add {
        name: String,
    },
    /// Remove a role; every client holding it loses it.
    Remove {
        name: String,
    },
    /// Grant PERM on every key starting with PREFIX (a vault: `vault/NAME/`; "" is every key).
    Grant {
        name: String,
        #[arg(long)]
        prefix: String,
        #[arg(long)]
        perm: crate::api::Perm,
    },
    /// Remove the role's grant on exactly PREFIX.
    Revoke {
        name: String,
        #[arg(long)]
        prefix: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum VaultCommand {
    /// Every vault: keys, bytes, created and updated revision (from metadata, no key scan).
    List,
}

/// `aspen watch --filter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WatchOnly {
    Put,
    Delete,
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
    /// Reclaim the free space in the node's database file (after deletes, log purges and
    /// history compactions; etcd's defrag); reads and writes on that node wait while it runs.
    /// Prints the sizes and the wait. Not `aspen compact`, which drops old history.
    Defrag,
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
    /// Compare the members' key spaces (root only): the leader has every member hash its key
    /// space at the same point of the log. Exits 1 naming the members whose hash differs.
    Hashkv,
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
            if answer.failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(error) => {
            eprintln!("Error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(cli: &Cli) -> Result<Answer, String> {
    if let CliCommand::Cluster(ClusterCommand::Init { members }) = &cli.command {
        return cluster::cluster_init(client_key(cli)?, members).await;
    }
    // Admin commands talk to one node's HTTP address, not to the cluster.
    if let CliCommand::Admin {
        http,
        token,
        command,
    } = &cli.command
    {
        return admin::admin_over_http(&cli.data_dir, http.as_deref(), token.clone(), command)
            .await;
    }
    if let CliCommand::Bench { workload, options } = &cli.command {
        // etcd's endpoints need neither Aspen addresses nor a client key.
        let (key, nodes) = match options.protocol {
            crate::bench::Protocol::Aspen => (client_key(cli)?, node_addresses(cli)?),
            crate::bench::Protocol::Etcd => (iroh::SecretKey::generate(), Vec::new()),
        };
        return admin::bench(key, &nodes, *workload, options.clone()).await;
    }
    let client = Client::connect_with_key(client_key(cli)?, &node_addresses(cli)?)
        .await
        .map_err(|e| e.to_string())?;
    match &cli.command {
        CliCommand::Put {
            key,
            value,
            ttl,
            lease,
            prev_kv,
        } => kv::put(&client, key, value, *ttl, *lease, *prev_kv).await,
        command @ CliCommand::Get { .. } => kv::get(&client, command).await,
        CliCommand::Del {
            key,
            prefix,
            range_end,
        } => kv::del(&client, key, *prefix, range_end.as_deref()).await,
        command @ CliCommand::Txn { .. } => kv::txn(&client, command).await,
        CliCommand::Compact { revision } => kv::compact(&client, *revision).await,
        command @ CliCommand::Watch { .. } => {
            kv::watch(&client, command, cli.output == OutputFormat::Json).await
        }
        CliCommand::Lease(command) => lease::lease(&client, command).await,
        CliCommand::Vault(VaultCommand::List) => kv::vault_list(&client).await,
        CliCommand::Cluster(command) => cluster::cluster(&client, command).await,
        CliCommand::Sql { query, consistency } => kv::sql(&client, query, *consistency).await,
        CliCommand::Auth(command) => auth::auth(&client, command).await,
        CliCommand::Admin { .. } | CliCommand::Bench { .. } => {
            unreachable!("answered before connecting")
        }
    }
}

/// The client key: `--key` / `ASPEN_KEY`, else `DIR/client.key` of the first `--data-dir`
/// when it exists, else `~/.config/aspen/client.key` (created on first use).
fn client_key(cli: &Cli) -> Result<iroh::SecretKey, String> {
    let path = match (&cli.key_file, cli.data_dir.first()) {
        (Some(path), _) => path.clone(),
        (None, Some(dir)) if dir.join(CLIENT_KEY_FILE).is_file() => dir.join(CLIENT_KEY_FILE),
        (None, _) => crate::client::default_key_path().map_err(|e| e.to_string())?,
    };
    crate::client::load_key(&path).map_err(|e| e.to_string())
}

fn node_addresses(cli: &Cli) -> Result<Vec<NodeAddress>, String> {
    let mut addresses = Vec::new();
    for node in &cli.node {
        addresses.push(node.parse::<NodeAddress>().map_err(|e| e.to_string())?);
    }
    if addresses.is_empty() {
        for dir in &cli.data_dir {
            addresses.push(read_addr_file(dir).map_err(|e| e.to_string())?);
        }
    }
    if addresses.is_empty() {
        return Err(
            "no node given: use --node ENDPOINT_ID@IP:PORT, ASPEN_NODE, or --data-dir DIR".into(),
        );
    }
    Ok(addresses)
}
