//! Named limits shared by every layer. Each has a one-line reason; relationships between them
//! are checked at compile time. Storage enforces the ones about data; the network and SQL
//! layers enforce theirs with the same constants.

/// Keys are index entries too (expiry, lease): keep them small enough to stay cheap to copy.
pub const KEY_BYTES_MAX: usize = 8 * 1024;
/// Values are stored inline in one redb entry; larger blobs belong elsewhere.
pub const VALUE_BYTES_MAX: usize = 1024 * 1024;
/// etcd's default: a transaction must stay small enough to apply quickly on every node.
pub const TXN_OPS_MAX: usize = 128;
/// Transactions nest at most this deep inside a transaction (etcd's nested transactions): 1
/// would allow a transaction inside a transaction, not one inside that.
pub const TXN_NESTING_MAX: usize = 4;
/// Bytes of keys and values in one command; bounds one log entry well below a frame.
pub const COMMAND_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Members named in one `cluster init`: far more than a Raft cluster should hold (etcd
/// advises 3 to 7), few enough that a hostile list costs nothing to refuse.
pub const MEMBERS_MAX: usize = 100;
/// One page of a range scan; the caller continues from the returned continuation key.
pub const SCAN_ENTRIES_MAX: usize = 1_000;
/// A page of a range stops growing past this many bytes of keys and values (it always holds
/// at least one entry): a response frame stays far under `FRAME_BYTES_MAX`, and each range
/// being answered holds about three copies of it (the page, its frame, QUIC's send buffer).
pub const PAGE_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Keys plus leases named by one `Expire` command (the TTL actor's batch).
pub const EXPIRE_BATCH_MAX: usize = 1_000;
/// At most this many client requests share one Raft log entry (`Command::Batch`: group commit).
pub const PROPOSAL_BATCH_MAX: usize = 256;
/// How long the proposer waits for the writers its last entry answered before it proposes
/// the writes that queued meanwhile (only when writes were waiting, so a lone writer never
/// waits).
pub const PROPOSAL_LINGER: std::time::Duration = std::time::Duration::from_micros(500);
/// The in-memory tail of the Raft log (`storage::tail`) keeps at most this many recent
/// entries...
pub const LOG_TAIL_ENTRIES_MAX: usize = 512;
/// ...and at most about this many bytes of keys and values: replication and apply read the
/// last few entries, and each byte here is resident memory (with 16 MiB a leader reached
/// 209 MB RSS in `scripts/bench.sh 2 8`, over the 200 MB target; 4 MiB peaked at 161 MB in
/// the same sequence of 3-node runs).
pub const LOG_TAIL_BYTES_MAX: usize = 4 * 1024 * 1024;
/// How long a new Raft core waits for the appends an earlier core published to commit before
/// it reads the log (`storage::published`); what has not committed by then counts as lost.
pub const PUBLISHED_SETTLE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// A batch stops growing once its requests carry this many bytes of keys and values (a request
/// bigger than that is proposed alone), so one entry stays well inside a replication frame.
pub const PROPOSAL_BATCH_BYTES_MAX: usize = 1024 * 1024;
/// One AppendEntries carries at most this many bytes of keys and values (and always at least
/// one entry): openraft 0.9 gives each AppendEntries one heartbeat interval to be sent,
/// written and answered, and drops it as timed out after that, so a follower far behind
/// catches up in steps that each fit the interval.
pub const APPEND_ENTRIES_BYTES_MAX: usize = 2 * 1024 * 1024;
/// Longest TTL for a key or a lease: one year, so `now + ttl` never overflows.
pub const TTL_MS_MAX: u64 = 365 * 24 * 60 * 60 * 1000;
/// Keys removed per redb range pass while deleting a range: bounds memory, not the range.
pub const DELETE_CHUNK_ENTRIES_MAX: usize = 1_024;
/// Largest length-prefixed record in a snapshot file (one key and its entry, plus framing).
pub const SNAPSHOT_RECORD_BYTES_MAX: usize = 2 * (KEY_BYTES_MAX + VALUE_BYTES_MAX);
/// Largest network frame; one command (and its Raft envelope) must always fit in one.
pub const FRAME_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Default largest client request frame (`net.request_bytes_max`): etcd's default
/// `--max-request-bytes`.
pub const REQUEST_BYTES_MAX_DEFAULT: usize = 1536 * 1024;
/// The smallest `net.request_bytes_max`: a put of the largest key and value, with its
/// request envelope, must fit.
pub const REQUEST_BYTES_MIN: usize = KEY_BYTES_MAX + VALUE_BYTES_MAX + 4096;
/// Streams a peer may have open at once on one QUIC connection (both protocols).
pub const STREAMS_PER_CONNECTION_MAX: u32 = 128;
/// Bytes a peer may have in flight on one QUIC connection, unread by the node (QUIC's
/// default has no connection-wide bound, only 1.25 MB per stream).
pub const CONNECTION_WINDOW_BYTES: u32 = 8 * 1024 * 1024;
/// SQL result rows returned to one query before it is truncated.
pub const SQL_ROWS_MAX: usize = 10_000;
/// Longest a SQL query may run (the configurable timeout's ceiling).
pub const SQL_TIMEOUT_MS_MAX: u64 = 30_000;
/// Bytes of SQL result rows in one answer: the rest is truncated, so it fits one frame.
pub const SQL_RESULT_BYTES_MAX: usize = FRAME_BYTES_MAX / 2;
/// Longest SQL text: bounds the parser's and planner's work before the plan can be checked
/// (a long `IN` list fits; a 5,000-term `UNION ALL` does not).
pub const SQL_TEXT_BYTES_MAX: usize = 64 * 1024;
/// Special forms (`CAST(`, `SUBSTRING(`, ...) nested in each other: sqlparser may parse each
/// level twice, so the parse can cost 2^N; 2^6 parses of the longest text take 1.6 s in a
/// debug build (2^8: 6.5 s).
pub const SQL_SPECIAL_FORMS_NESTED_MAX: usize = 6;
/// Deepest expression (a chain of `AND`, `OR` or `+` nests one level per operator):
/// planning takes time quadratic in it and cannot be interrupted by the timeout.
pub const SQL_EXPR_DEPTH_MAX: usize = 256;
/// Queries nested in queries (subqueries in `FROM`, `IN`, `EXISTS`, scalar ones): planning
/// nested `IN` subqueries takes time exponential in their depth (15: 0.5 s, 20: 15 s in a
/// debug build).
pub const SQL_QUERY_DEPTH_MAX: usize = 12;
/// SELECTs joined by set operations, or CTEs, in one query: planning them takes time
/// quadratic in their number (2,000 chained CTEs: 5 s in a debug build).
pub const SQL_QUERY_TERMS_MAX: usize = 256;
/// Yield points (one per operator) on one path of a physical plan: each takes a unit of
/// tokio's cooperative budget of 128 per poll, and past it the query stops progressing.
pub const SQL_YIELD_POINTS_NESTED_MAX: usize = 100;
/// Deepest logical plan (operators inside operators, subqueries included): planning and
/// optimizing walk the plan recursively, and every level costs each optimizer pass.
pub const SQL_PLAN_DEPTH_MAX: usize = 1_000;
/// Stack of each SQL thread. DataFusion's planner and optimizer grow their stacks on the heap
/// as they recurse (`recursive_protection`); this covers what recurses unprotected (dropping
/// or printing a deep plan, the parser) for any plan within [`SQL_PLAN_DEPTH_MAX`].
pub const SQL_THREAD_STACK_BYTES: usize = 16 * 1024 * 1024;
/// A vault's name (in `vault/NAME/...`): short, as it labels metrics and log lines.
pub const VAULT_NAME_BYTES_MAX: usize = 64;
/// Default number of vaults (`storage.vaults_max`); each is a metric label set.
pub const VAULTS_MAX_DEFAULT: u64 = 1_000;
/// Default keys per vault (`storage.vault_keys_max`).
pub const VAULT_KEYS_MAX_DEFAULT: u64 = 1_000_000;
/// Default redb page cache (`storage.cache_bytes`): small, because the OS page cache holds
/// the file too.
pub const CACHE_BYTES_DEFAULT: usize = 64 * 1024 * 1024;
/// Default of `storage.quick_repair`: see `StoreOptions::quick_repair`.
pub const QUICK_REPAIR_DEFAULT: bool = false;
/// Default database quota: over it, writes fail with `quota exceeded`.
pub const QUOTA_BYTES_DEFAULT: u64 = 8 * 1024 * 1024 * 1024;
/// Revisions of history the leader keeps by default (`storage.history_retention`): about
/// 60 MB of history at 256-byte values, and a watcher may fall this far behind.
pub const HISTORY_RETENTION_DEFAULT: u64 = 100_000;

const _: () = assert!(KEY_BYTES_MAX + VALUE_BYTES_MAX <= COMMAND_BYTES_MAX);
const _: () = assert!(COMMAND_BYTES_MAX * 3 / 2 <= FRAME_BYTES_MAX);
const _: () = assert!(REQUEST_BYTES_MIN <= REQUEST_BYTES_MAX_DEFAULT);
const _: () = assert!(REQUEST_BYTES_MAX_DEFAULT <= FRAME_BYTES_MAX);
const _: () = assert!(PAGE_BYTES_MAX + KEY_BYTES_MAX + VALUE_BYTES_MAX < FRAME_BYTES_MAX / 2);
const _: () = assert!(KEY_BYTES_MAX + VALUE_BYTES_MAX < SNAPSHOT_RECORD_BYTES_MAX);
const _: () = assert!(SCAN_ENTRIES_MAX <= DELETE_CHUNK_ENTRIES_MAX);
const _: () = assert!(SQL_RESULT_BYTES_MAX + KEY_BYTES_MAX + VALUE_BYTES_MAX < FRAME_BYTES_MAX);
/// How long the leader waits for each member's hash at a hash check (`aspen cluster hashkv`):
/// the member must apply the check entry and hash its key space within it.
pub const HASH_CHECK_WAIT_MS: u64 = 10_000;
/// The shortest `health.hash_check_interval_ms` (each check hashes every member's whole key
/// space).
pub const HASH_CHECK_INTERVAL_MS_MIN: u64 = 1_000;
/// Hash checks a node keeps the results of (the leader asks for one moments after proposing).
pub const HASH_RESULTS_KEPT: usize = 16;
/// Hash checks a node hashes at once; one more is answered "busy" (each holds a read
/// transaction open, which keeps the pages it reads from being reused).
pub const HASH_RUNNING_MAX: usize = 2;
