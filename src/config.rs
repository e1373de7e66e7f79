//! Node configuration: a TOML file read with the `config` crate, overridden by environment
//! variables `ASPEN_SECTION__KEY` (`ASPEN_NODE__DATA_DIR` sets `[node] data_dir`), then validated
//! once, with one message a user can act on per broken rule. Unknown keys are an error. Every key
//! has a default, so an empty file is a valid single-node config.
//!
//! Owns: parsing and validation. Does not touch: storage, actors, the network.
//!
//! Long because it holds every config key with its default and its validation rule side by side
//! (about 120 of its lines are tests).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::limits::{
    CACHE_BYTES_DEFAULT, EXPIRE_BATCH_MAX, FRAME_BYTES_MAX, HASH_CHECK_INTERVAL_MS_MIN,
    HISTORY_RETENTION_DEFAULT, QUICK_REPAIR_DEFAULT, QUOTA_BYTES_DEFAULT, SQL_ROWS_MAX,
    SQL_TIMEOUT_MS_MAX, VAULT_KEYS_MAX_DEFAULT, VAULTS_MAX_DEFAULT,
};

/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "ASPEN";
/// Joins a section and a key in an environment override.
pub const ENV_SECTION_SEPARATOR: &str = "__";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("config: {0}")]
    Load(#[from] config::ConfigError),
    #[error("config: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

/// The whole node configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    pub node: NodeSection,
    pub http: HttpSection,
    pub net: NetSection,
    pub raft: RaftSection,
    pub storage: StorageSection,
    pub ttl: TtlSection,
    pub health: HealthSection,
    pub supervisor: SupervisorSection,
    pub sql: SqlSection,
    pub auth: AuthSection,
    pub etcd: EtcdSection,
}

/// etcd v3's gRPC API (docs/etcd.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EtcdSection {
    /// Where etcd's clients connect (TCP, gRPC without TLS): loopback by default, port 0
    /// picks a free port (written to `DATA_DIR/etcd.addr`), empty turns the API off.
    pub address: String,
    /// The key file of the Aspen client whose roles requests through the etcd API get (etcd's
    /// clients prove no Aspen identity). Empty: an identity of the node's own with no roles,
    /// which is served only with `auth.enabled = false`.
    pub client_key: String,
    /// How often a watch created with `progress_notify` hears the revision it reached while
    /// nothing changes (etcd's `--experimental-watch-progress-notify-interval`, 10 minutes).
    pub progress_notify_ms: u64,
}

impl Default for EtcdSection {
    fn default() -> Self {
        EtcdSection {
            address: "127.0.0.1:2379".into(),
            client_key: String::new(),
            progress_notify_ms: 10 * 60 * 1000,
        }
    }
}

impl EtcdSection {
    /// The address to serve on; `None`: off. Refused by `validate` when it does not parse.
    pub fn socket_address(&self) -> Option<SocketAddr> {
        self.address.trim().parse().ok()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// `data_dir/aspen.redb`.
    File,
    /// redb's in-memory backend: nothing survives a restart.
    Inmemory,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSection {
    /// This node's Raft id; unique in the cluster, at least 1.
    pub id: u64,
    pub data_dir: PathBuf,
    pub storage: StorageKind,
    /// Exit the process with a non-zero status when the node fails (restart budget spent or
    /// storage refused), so a service manager can act.
    pub exit_on_failure: bool,
    /// `tracing` filter, e.g. `info` or `aspen=debug`; `RUST_LOG` wins when set.
    pub log_level: String,
}

impl Default for NodeSection {
    fn default() -> Self {
        NodeSection {
            id: 1,
            data_dir: PathBuf::from("./data/node1"),
            storage: StorageKind::File,
            exit_on_failure: false,
            log_level: "info,openraft=warn".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSection {
    /// `/health`, `/metrics`, `/status`, `/admin/*`. Loopback by default; port 0 picks a free
    /// port.
    pub address: SocketAddr,
    /// The bearer token every `/admin/*` request needs (`Authorization: Bearer TOKEN`). Empty:
    /// the node generates one into `DATA_DIR/admin.token` (mode 0600) on first start. Better
    /// given as `ASPEN_HTTP__ADMIN_TOKEN` than in the file.
    pub admin_token: String,
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            address: SocketAddr::from(([127, 0, 0, 1], 9180)),
            admin_token: String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetSection {
    /// The iroh QUIC endpoint (Raft between nodes and the client protocol). Loopback by
    /// default; port 0 picks a free port.
    pub address: SocketAddr,
    /// Nodes trusted to send Raft RPCs before they appear in the membership, as
    /// `ENDPOINT_ID@IP:PORT` (a node joining an existing cluster lists its members here).
    pub peers: Vec<String>,
    /// Giving up on a connection attempt to a peer.
    pub connect_timeout_ms: u64,
    /// A forwarded client request waits this long for the leader.
    pub request_timeout_ms: u64,
    /// Client requests slower than this are logged (op, key, vault, duration, revision).
    pub slow_request_ms: u64,
    /// Largest client request frame (etcd's `--max-request-bytes` default, 1.5 MiB, holds one
    /// 1 MiB value with its key); a larger one is refused unread. A request frame must also
    /// arrive whole within `request_timeout_ms`.
    pub request_bytes_max: u64,
    /// Client requests being read or served at once; one more is refused at once with
    /// "node busy" (nothing done; the client library retries it).
    pub requests_max: u32,
    /// Client connections open at once; one more is closed at once. With QUIC's per-connection
    /// window (`limits::CONNECTION_WINDOW_BYTES`) this bounds what peers can make a node buffer.
    pub connections_max: u32,
    /// Testing only: enables `POST /admin/faults`, which cuts this node off from its peers
    /// (Raft both ways and request forwarding) to test partitions with real processes.
    pub fault_injection: bool,
}

impl Default for NetSection {
    fn default() -> Self {
        NetSection {
            address: SocketAddr::from(([127, 0, 0, 1], 9190)),
            peers: Vec::new(),
            connect_timeout_ms: 2_000,
            request_timeout_ms: 10_000,
            slow_request_ms: 500,
            request_bytes_max: crate::limits::REQUEST_BYTES_MAX_DEFAULT as u64,
            requests_max: 1_024,
            connections_max: 1_024,
            fault_injection: false,
        }
    }
}

impl NetSection {
    /// The endpoint ids of `peers` (entries that do not parse are refused by `validate`).
    pub fn peer_ids(&self) -> std::collections::HashSet<iroh::EndpointId> {
        self.peers
            .iter()
            .filter_map(|peer| peer.parse::<crate::api::NodeAddress>().ok())
            .map(|address| address.id)
            .collect()
    }
}

/// How a node with an empty store starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bootstrap {
    /// Initialize a one-member cluster of itself (a single node that works out of the box).
    Single,
    /// Wait to be made a member: `aspen cluster init` or `aspen cluster add-learner`.
    None,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftSection {
    pub bootstrap: Bootstrap,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many entries were applied since the last one.
    pub snapshot_after_entries: u64,
    /// Entries already in a snapshot kept in the log (for followers slightly behind); older
    /// ones are purged, and a follower that needs them catches up through the snapshot.
    pub log_entries_kept: u64,
    /// Snapshots travel to followers in chunks of at most this many bytes.
    pub snapshot_chunk_bytes: u64,
}

impl Default for RaftSection {
    fn default() -> Self {
        RaftSection {
            bootstrap: Bootstrap::Single,
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            snapshot_after_entries: 10_000,
            log_entries_kept: 1_000,
            snapshot_chunk_bytes: 1 << 20,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSection {
    /// Save redb's allocator state in every commit (fast restart after a crash, slower appends).
    pub quick_repair: bool,
    /// redb page cache.
    pub cache_bytes: u64,
    /// Database file quota: at or over it, writes that add data are refused (quota alarm).
    pub quota_bytes: u64,
    /// Most vaults (`vault/NAME/...` key namespaces) the cluster may hold. The leader's values
    /// are replicated and enforced by every node.
    pub vaults_max: u64,
    /// Most keys one vault may hold.
    pub vault_keys_max: u64,
    /// How much history the leader keeps: a revision count (`100000`), a duration (`"1h"`),
    /// or `0` to keep it all. Older history is compacted automatically (`aspen compact`).
    pub history_retention: HistoryRetention,
}

/// `storage.history_retention`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RetentionValue", into = "RetentionValue")]
pub enum HistoryRetention {
    /// Never compacted automatically.
    All,
    /// The last this many revisions.
    Revisions(u64),
    /// The revisions made in the last this long.
    Duration(Duration),
}

/// How `storage.history_retention` is written: a number of revisions, or text (a number or a
/// duration such as `"30m"`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum RetentionValue {
    Count(u64),
    Text(String),
}

/// A `storage.history_retention` that is neither a revision count nor a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("storage.history_retention {value:?} is neither a revision count nor a duration: {reason}")]
pub struct BadRetention {
    value: String,
    reason: String,
}

impl TryFrom<RetentionValue> for HistoryRetention {
    type Error = BadRetention;

    fn try_from(value: RetentionValue) -> Result<Self, BadRetention> {
        let count = match value {
            RetentionValue::Count(count) => count,
            RetentionValue::Text(text) => match text.trim().parse::<u64>() {
                Ok(count) => count,
                Err(_) => {
                    let duration =
                        humantime::parse_duration(text.trim()).map_err(|e| BadRetention {
                            value: text.clone(),
                            reason: e.to_string(),
                        })?;
                    return Ok(match duration.is_zero() {
                        true => HistoryRetention::All,
                        false => HistoryRetention::Duration(duration),
                    });
                }
            },
        };
        Ok(match count {
            0 => HistoryRetention::All,
            count => HistoryRetention::Revisions(count),
        })
    }
}

impl From<HistoryRetention> for RetentionValue {
    fn from(retention: HistoryRetention) -> Self {
        match retention {
            HistoryRetention::All => RetentionValue::Count(0),
            HistoryRetention::Revisions(count) => RetentionValue::Count(count),
            HistoryRetention::Duration(duration) => {
                RetentionValue::Text(humantime::format_duration(duration).to_string())
            }
        }
    }
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection {
            quick_repair: QUICK_REPAIR_DEFAULT,
            cache_bytes: CACHE_BYTES_DEFAULT as u64,
            quota_bytes: QUOTA_BYTES_DEFAULT,
            vaults_max: VAULTS_MAX_DEFAULT,
            vault_keys_max: VAULT_KEYS_MAX_DEFAULT,
            history_retention: HistoryRetention::Revisions(HISTORY_RETENTION_DEFAULT),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TtlSection {
    /// How often the leader looks for expired keys and leases.
    pub interval_ms: u64,
    /// Keys plus leases proposed in one `Expire`.
    pub batch_max: u64,
}

impl Default for TtlSection {
    fn default() -> Self {
        TtlSection {
            interval_ms: 500,
            batch_max: 500,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthSection {
    /// How often every check runs.
    pub interval_ms: u64,
    /// An actor that does not answer a ping within this is critical.
    pub ping_timeout_ms: u64,
    /// A child whose check is critical this many times in a row is restarted.
    pub critical_restarts_after: u32,
    /// Free space on the data dir's disk below these percentages is warning / critical.
    pub disk_free_warning_percent: u8,
    pub disk_free_critical_percent: u8,
    /// The database file above this percentage of the quota is a warning (at 100% the quota
    /// alarm goes on: the `quota` check).
    pub db_size_warning_percent: u8,
    /// Committed but not yet applied entries above these counts are warning / critical.
    pub apply_lag_warning: u64,
    pub apply_lag_critical: u64,
    /// As the leader, compare the members' key spaces this often (`aspen cluster hashkv`);
    /// 0: never (the default, as etcd's periodic corruption check is off by default).
    pub hash_check_interval_ms: u64,
}

impl Default for HealthSection {
    fn default() -> Self {
        HealthSection {
            interval_ms: 1_000,
            ping_timeout_ms: 500,
            critical_restarts_after: 3,
            disk_free_warning_percent: 10,
            disk_free_critical_percent: 5,
            db_size_warning_percent: 80,
            apply_lag_warning: 1_000,
            apply_lag_critical: 10_000,
            hash_check_interval_ms: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SupervisorSection {
    /// R: more than this many restarts within `restart_window_ms` fail the node.
    pub restarts_max: u32,
    /// T: the window the restart budget is counted over.
    pub restart_window_ms: u64,
    /// First restart delay; doubles per consecutive failure of the same child.
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
}

impl Default for SupervisorSection {
    fn default() -> Self {
        SupervisorSection {
            restarts_max: 5,
            restart_window_ms: 60_000,
            backoff_initial_ms: 100,
            backoff_max_ms: 5_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SqlSection {
    /// Queries running at once on this node; more wait for a slot within their timeout.
    pub max_concurrent: u32,
    /// A query's deadline, waiting for a slot included (at most 30 s).
    pub timeout_ms: u64,
    /// Rows returned by one query; a longer answer is truncated and says so (at most 10,000).
    pub row_limit: u32,
    /// Memory DataFusion's sorts, joins and aggregates may hold on this node.
    pub memory_limit_bytes: u64,
}

impl Default for SqlSection {
    fn default() -> Self {
        SqlSection {
            max_concurrent: 4,
            timeout_ms: 5_000,
            row_limit: SQL_ROWS_MAX as u32,
            memory_limit_bytes: 256 << 20,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSection {
    /// Check every client request against the replicated roles. `false` is for a throwaway
    /// local node only, and refused with a non-loopback `net.address`.
    pub enabled: bool,
    /// Endpoint ids of clients made root when the cluster has no root client yet (the
    /// bootstrap), besides the client that sent `cluster init`. Empty on a node that forms a
    /// cluster by itself (`raft.bootstrap = "single"`): the node creates `DATA_DIR/client.key`
    /// and makes its id root. As an environment override: ids separated by commas.
    pub root_clients: Vec<String>,
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            enabled: true,
            root_clients: Vec::new(),
        }
    }
}

impl AuthSection {
    /// The configured root clients, parsed (the config was validated, so every id parses).
    pub fn roots(&self) -> Vec<crate::api::ClientId> {
        self.root_clients
            .iter()
            .filter_map(|id| id.trim().parse().ok())
            .collect()
    }
}

impl NodeConfig {
    /// Loads `path` (TOML), applies `ASPEN_*__*` environment overrides, and validates.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    /// As [`NodeConfig::load`], with the environment given explicitly (tests).
    pub fn load_with_env(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<NodeConfig, ConfigError> {
        // Only `ASPEN_SECTION__KEY` variables are overrides: `ASPEN_NODE` (the CLI's node
        // address) and the like must not turn into config keys.
        let overrides: config::Map<String, String> = env
            .into_iter()
            .filter(|(name, _)| {
                name.strip_prefix(ENV_PREFIX)
                    .and_then(|rest| rest.strip_prefix('_'))
                    .is_some_and(|rest| rest.contains(ENV_SECTION_SEPARATOR))
            })
            .collect();
        let config: NodeConfig = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix(ENV_PREFIX)
                    .prefix_separator("_")
                    .separator(ENV_SECTION_SEPARATOR)
                    .try_parsing(true)
                    .list_separator(",")
                    .with_list_parse_key("auth.root_clients")
                    .with_list_parse_key("net.peers")
                    .source(Some(overrides)),
            )
            .build()?
            .try_deserialize()?;
        config.validate()?;
        Ok(config)
    }

    /// Every broken rule, one message each.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut broken = Vec::new();
        let mut rule = |ok: bool, message: String| {
            if !ok {
                broken.push(message);
            }
        };
        let (node, raft, health, sup, ttl) = (
            &self.node,
            &self.raft,
            &self.health,
            &self.supervisor,
            &self.ttl,
        );
        rule(
            node.id >= 1,
            "node.id must be at least 1 (0 is reserved)".into(),
        );
        rule(
            node.storage == StorageKind::Inmemory || !node.data_dir.as_os_str().is_empty(),
            "node.data_dir must be set when node.storage is \"file\"".into(),
        );
        rule(
            raft.heartbeat_interval_ms >= 10,
            format!(
                "raft.heartbeat_interval_ms ({}) must be at least 10",
                raft.heartbeat_interval_ms
            ),
        );
        rule(
            raft.election_timeout_min_ms > raft.heartbeat_interval_ms,
            format!(
                "raft.election_timeout_min_ms ({}) must exceed raft.heartbeat_interval_ms ({})",
                raft.election_timeout_min_ms, raft.heartbeat_interval_ms
            ),
        );
        rule(
            raft.election_timeout_max_ms > raft.election_timeout_min_ms,
            format!(
                "raft.election_timeout_max_ms ({}) must exceed raft.election_timeout_min_ms ({})",
                raft.election_timeout_max_ms, raft.election_timeout_min_ms
            ),
        );
        rule(
            raft.snapshot_after_entries >= 1,
            "raft.snapshot_after_entries must be at least 1".into(),
        );
        rule(
            (4096..=(FRAME_BYTES_MAX / 2) as u64).contains(&raft.snapshot_chunk_bytes),
            format!(
                "raft.snapshot_chunk_bytes ({}) must be between 4096 and {}",
                raft.snapshot_chunk_bytes,
                FRAME_BYTES_MAX / 2
            ),
        );
        for peer in &self.net.peers {
            if let Err(error) = peer.parse::<crate::api::NodeAddress>() {
                rule(false, format!("net.peers: {error}"));
            }
        }
        rule(
            self.net.connect_timeout_ms >= 1 && self.net.request_timeout_ms >= 1,
            "net.connect_timeout_ms and net.request_timeout_ms must be at least 1".into(),
        );
        let request_min = crate::limits::REQUEST_BYTES_MIN as u64;
        rule(
            (request_min..=FRAME_BYTES_MAX as u64).contains(&self.net.request_bytes_max),
            format!(
                "net.request_bytes_max ({}) must be between {request_min} (one largest key and value) and {FRAME_BYTES_MAX}",
                self.net.request_bytes_max
            ),
        );
        rule(
            self.net.requests_max >= 1 && self.net.connections_max >= 1,
            "net.requests_max and net.connections_max must be at least 1".into(),
        );
        rule(
            self.health.hash_check_interval_ms == 0
                || self.health.hash_check_interval_ms >= HASH_CHECK_INTERVAL_MS_MIN,
            format!(
                "health.hash_check_interval_ms ({}) must be 0 (off) or at least {HASH_CHECK_INTERVAL_MS_MIN}",
                self.health.hash_check_interval_ms
            ),
        );
        rule(
            self.storage.quota_bytes >= 1 << 20,
            format!(
                "storage.quota_bytes ({}) must be at least 1 MiB",
                self.storage.quota_bytes
            ),
        );
        rule(
            self.storage.vaults_max >= 1 && self.storage.vault_keys_max >= 1,
            "storage.vaults_max and storage.vault_keys_max must be at least 1".into(),
        );
        for id in &self.auth.root_clients {
            if let Err(error) = id.trim().parse::<crate::api::ClientId>() {
                rule(
                    false,
                    format!("auth.root_clients: {id:?} is not an endpoint id: {error}"),
                );
            }
        }
        rule(
            self.auth.enabled || self.net.address.ip().is_loopback(),
            format!(
                "auth.enabled = false is for a local node only: net.address {} is not loopback",
                self.net.address
            ),
        );
        let etcd = self.etcd.address.trim();
        rule(
            etcd.is_empty() || etcd.parse::<SocketAddr>().is_ok(),
            format!("etcd.address {etcd:?} is not IP:PORT (or empty: off)"),
        );
        rule(
            self.auth.enabled
                || self
                    .etcd
                    .socket_address()
                    .is_none_or(|address| address.ip().is_loopback()),
            format!(
                "auth.enabled = false is for a local node only: etcd.address {etcd} is not \
                 loopback"
            ),
        );
        rule(
            self.etcd.progress_notify_ms >= 100,
            format!(
                "etcd.progress_notify_ms ({}) must be at least 100",
                self.etcd.progress_notify_ms
            ),
        );
        let sql = &self.sql;
        rule(
            (1..=64).contains(&sql.max_concurrent),
            format!(
                "sql.max_concurrent ({}) must be between 1 and 64",
                sql.max_concurrent
            ),
        );
        rule(
            (1..=SQL_TIMEOUT_MS_MAX).contains(&sql.timeout_ms),
            format!(
                "sql.timeout_ms ({}) must be between 1 and {SQL_TIMEOUT_MS_MAX}",
                sql.timeout_ms
            ),
        );
        rule(
            (1..=SQL_ROWS_MAX as u32).contains(&sql.row_limit),
            format!(
                "sql.row_limit ({}) must be between 1 and {SQL_ROWS_MAX}",
                sql.row_limit
            ),
        );
        rule(
            sql.memory_limit_bytes >= 1 << 20,
            format!(
                "sql.memory_limit_bytes ({}) must be at least 1 MiB",
                sql.memory_limit_bytes
            ),
        );
        rule(
            ttl.interval_ms >= 10,
            format!("ttl.interval_ms ({}) must be at least 10", ttl.interval_ms),
        );
        rule(
            (1..=EXPIRE_BATCH_MAX as u64).contains(&ttl.batch_max),
            format!(
                "ttl.batch_max ({}) must be between 1 and {EXPIRE_BATCH_MAX}",
                ttl.batch_max
            ),
        );
        rule(
            health.interval_ms >= 10,
            format!(
                "health.interval_ms ({}) must be at least 10",
                health.interval_ms
            ),
        );
        rule(
            health.ping_timeout_ms >= 1 && health.ping_timeout_ms <= health.interval_ms,
            format!(
                "health.ping_timeout_ms ({}) must be between 1 and health.interval_ms ({})",
                health.ping_timeout_ms, health.interval_ms
            ),
        );
        rule(
            health.critical_restarts_after >= 1,
            "health.critical_restarts_after must be at least 1".into(),
        );
        rule(
            health.disk_free_critical_percent <= health.disk_free_warning_percent
                && health.disk_free_warning_percent <= 100,
            format!(
                "health.disk_free_critical_percent ({}) must not exceed health.disk_free_warning_percent ({}), at most 100",
                health.disk_free_critical_percent, health.disk_free_warning_percent
            ),
        );
        rule(
            (1..=100).contains(&health.db_size_warning_percent),
            format!(
                "health.db_size_warning_percent ({}) must be between 1 and 100",
                health.db_size_warning_percent
            ),
        );
        rule(
            health.apply_lag_warning <= health.apply_lag_critical,
            format!(
                "health.apply_lag_warning ({}) must not exceed health.apply_lag_critical ({})",
                health.apply_lag_warning, health.apply_lag_critical
            ),
        );
        rule(
            sup.restarts_max >= 1,
            "supervisor.restarts_max must be at least 1".into(),
        );
        rule(
            sup.restart_window_ms >= 1,
            "supervisor.restart_window_ms must be at least 1".into(),
        );
        rule(
            sup.backoff_initial_ms >= 1 && sup.backoff_initial_ms <= sup.backoff_max_ms,
            format!(
                "supervisor.backoff_initial_ms ({}) must be between 1 and supervisor.backoff_max_ms ({})",
                sup.backoff_initial_ms, sup.backoff_max_ms
            ),
        );
        if broken.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(broken))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    // Proves `storage.history_retention` takes a revision count (number or text), a duration,
    // or 0 for all, and that anything else is refused naming the key.
    #[test]
    fn history_retention_takes_counts_durations_and_zero() {
        let parse = |value: &str| {
            let (_dir, path) = write(&format!("[storage]\nhistory_retention = {value}\n"));
            NodeConfig::load_with_env(&path, env(&[])).map(|c| c.storage.history_retention)
        };
        assert_eq!(parse("5000").unwrap(), HistoryRetention::Revisions(5000));
        assert_eq!(
            parse("\"5000\"").unwrap(),
            HistoryRetention::Revisions(5000)
        );
        assert_eq!(
            parse("\"30m\"").unwrap(),
            HistoryRetention::Duration(Duration::from_secs(1800))
        );
        assert_eq!(parse("0").unwrap(), HistoryRetention::All);
        let refused = parse("\"soon\"").unwrap_err().to_string();
        assert!(refused.contains("storage.history_retention"), "{refused}");
        assert_eq!(
            NodeConfig::default().storage.history_retention,
            HistoryRetention::Revisions(HISTORY_RETENTION_DEFAULT)
        );
    }

    // Proves the shipped config/node.toml loads and validates as it is.
    #[test]
    fn shipped_single_node_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/node.toml");
        let config = NodeConfig::load_with_env(&path, env(&[])).unwrap();
        assert_eq!(config.node.id, 1);
        assert_eq!(config.node.data_dir, PathBuf::from("./data/node1"));
        assert!(config.http.address.ip().is_loopback());
        assert!(config.net.address.ip().is_loopback());
        assert_eq!(config.raft.bootstrap, Bootstrap::Single);
    }

    // Proves the example TOMLs of a hand-made 3-node cluster load, wait for `cluster init`,
    // and use distinct ids, data dirs and ports.
    #[test]
    fn shipped_cluster_configs_are_valid() {
        let (mut ports, mut dirs) = (
            std::collections::BTreeSet::new(),
            std::collections::BTreeSet::new(),
        );
        for i in 1..=3 {
            let path =
                Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("config/cluster/node{i}.toml"));
            let config = NodeConfig::load_with_env(&path, env(&[])).unwrap();
            assert_eq!(config.node.id, i);
            assert_eq!(config.raft.bootstrap, Bootstrap::None);
            assert!(ports.insert(config.net.address.port()));
            assert!(ports.insert(config.http.address.port()));
            assert!(dirs.insert(config.node.data_dir));
        }
    }

    // Proves environment variables override file keys by section, parse numbers, and that
    // unrelated ASPEN_ variables (no section separator) are ignored.
    #[test]
    fn environment_overrides_file_keys() {
        let (_dir, path) = write("[node]\nid = 3\ndata_dir = \"/from/file\"\n");
        let config = NodeConfig::load_with_env(
            &path,
            env(&[
                ("ASPEN_NODE__DATA_DIR", "/from/env"),
                ("ASPEN_SUPERVISOR__RESTARTS_MAX", "9"),
                ("ASPEN_NODE", "not-a-config-key"),
            ]),
        )
        .unwrap();
        assert_eq!(config.node.id, 3);
        assert_eq!(config.node.data_dir, PathBuf::from("/from/env"));
        assert_eq!(config.supervisor.restarts_max, 9);
    }

    // Proves an unknown key is refused with its name.
    #[test]
    fn unknown_keys_are_errors() {
        let (_dir, path) = write("[node]\nid = 1\nfavourite_colour = \"green\"\n");
        let error = NodeConfig::load_with_env(&path, env(&[]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("favourite_colour"), "{error}");
        let (_dir, path) = write("[nodes]\nid = 1\n");
        let error = NodeConfig::load_with_env(&path, env(&[]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("nodes"), "{error}");
    }

    // Proves every broken rule is reported, each with the keys and values involved.
    #[test]
    fn validation_reports_each_broken_rule() {
        let (_dir, path) = write(
            "[node]\nid = 0\n[raft]\nheartbeat_interval_ms = 200\nelection_timeout_min_ms = 150\n\
             [supervisor]\nbackoff_initial_ms = 10000\nbackoff_max_ms = 100\n",
        );
        let Err(ConfigError::Invalid(broken)) = NodeConfig::load_with_env(&path, env(&[])) else {
            panic!("expected validation errors");
        };
        assert_eq!(broken.len(), 3, "{broken:?}");
        assert_eq!(broken[0], "node.id must be at least 1 (0 is reserved)");
        assert_eq!(
            broken[1],
            "raft.election_timeout_min_ms (150) must exceed raft.heartbeat_interval_ms (200)"
        );
        assert!(broken[2].starts_with("supervisor.backoff_initial_ms (10000)"));
    }

    // Proves an HTTP address off loopback needs no token in the config (the admin API is
    // always guarded: without one the node generates `DATA_DIR/admin.token`), and that the
    // token can come from the environment.
    #[test]
    fn http_off_loopback_takes_the_admin_token_from_the_environment() {
        let (_dir, path) = write("[http]\naddress = \"0.0.0.0:9180\"\n");
        let config = NodeConfig::load_with_env(&path, env(&[])).unwrap();
        assert_eq!(config.http.admin_token, "");
        let config =
            NodeConfig::load_with_env(&path, env(&[("ASPEN_HTTP__ADMIN_TOKEN", "secret")]))
                .unwrap();
        assert_eq!(config.http.admin_token, "secret");
    }

    // Proves `auth.root_clients` (and `net.peers`) take comma-separated lists from the
    // environment, that an id that is not an endpoint id is named, and that auth can be off
    // only on a loopback `net.address`.
    #[test]
    fn auth_settings_are_checked() {
        let a = iroh::SecretKey::from_bytes(&[1; 32]).public().to_string();
        let b = iroh::SecretKey::from_bytes(&[2; 32]).public().to_string();
        let (_dir, path) = write("");
        let config = NodeConfig::load_with_env(
            &path,
            env(&[("ASPEN_AUTH__ROOT_CLIENTS", &format!("{a},{b}"))]),
        )
        .unwrap();
        assert_eq!(config.auth.root_clients, vec![a.clone(), b]);
        assert_eq!(config.auth.roots().len(), 2);
        assert!(config.auth.enabled);
        let Err(ConfigError::Invalid(broken)) =
            NodeConfig::load_with_env(&path, env(&[("ASPEN_AUTH__ROOT_CLIENTS", "nobody")]))
        else {
            panic!("a bad root id was accepted");
        };
        assert!(
            broken[0].starts_with("auth.root_clients: \"nobody\""),
            "{broken:?}"
        );
        let (_dir, path) = write("[auth]\nenabled = false\n[net]\naddress = \"0.0.0.0:9190\"\n");
        let Err(ConfigError::Invalid(broken)) = NodeConfig::load_with_env(&path, env(&[])) else {
            panic!("auth off on a public address was accepted");
        };
        assert!(
            broken[0].contains("auth.enabled = false is for a local node only"),
            "{broken:?}"
        );
        let (_dir, path) = write("[auth]\nenabled = false\n");
        assert!(
            !NodeConfig::load_with_env(&path, env(&[]))
                .unwrap()
                .auth
                .enabled
        );
    }
}
