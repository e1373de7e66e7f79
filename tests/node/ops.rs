//! Operations on a running node: a hot backup over HTTP under a steady write load restored
//! into a new node; the admin token; `/admin/snapshot` with log purge; and, with real
//! processes, the `aspen admin` commands, a graceful shutdown that leaves nothing to replay,
//! `aspen-node check` and `aspen-node restore`. In-process nodes use ids 41-49: actors are
//! registered by node id, so tests running side by side need distinct ones.

use aspen::api::WriteOp;
use std::collections::BTreeMap;
use std::process::{Command as Process, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aspen::admin::AdminClient;
use aspen::api::{CheckStatus, CommandError, KeyRange, NodeHealth, Put, Txn, TxnOp};
use aspen::command::{Command, Request};
use aspen::node::NodeError;
use aspen::storage::StoreWrite;
use aspen::storage::{ScanOptions, Store};
use aspen::testing::TestNode;

const TOKEN: &str = "t0ken-for-tests";

/// Every live key of `store`: key -> (value, mod_revision).
fn contents(store: &Store) -> BTreeMap<Vec<u8>, (Vec<u8>, u64)> {
    let view = store.read(aspen::clock::now_ms()).expect("read");
    let mut range = KeyRange::prefix(b"");
    let mut out = BTreeMap::new();
    loop {
        let page = view.range(&range, ScanOptions::default()).expect("range");
        for kv in page.kvs {
            out.insert(kv.key, (kv.value, kv.mod_revision));
        }
        match page.continuation {
            Some(next) => range.start = next,
            None => return out,
        }
    }
}

/// A write as acknowledged: key, value, the revision it got.
type Written = (Vec<u8>, Vec<u8>, u64);

/// A task that writes `put(0)`, `put(1)`, ... through a node until stopped, recording every
/// acknowledged write with its revision; any failed write fails the test.
struct Writer {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    fn start(
        node: &TestNode,
        acked: Arc<std::sync::Mutex<Vec<Written>>>,
        put: impl Fn(u64) -> Put + Send + 'static,
    ) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let (shared, stopped) = (Arc::clone(&node.node.core), Arc::clone(&stop));
        let task = tokio::spawn(async move {
            let mut n = 0;
            while !stopped.load(Ordering::Relaxed) {
                let put = put(n);
                let response = shared
                    .write(request(Command::Write(WriteOp::Put(put.clone()))))
                    .await
                    .expect("a write under load failed");
                acked
                    .lock()
                    .unwrap()
                    .push((put.key, put.value, response.revision));
                n += 1;
            }
        });
        Writer { stop, task }
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("writer");
    }
}

fn request(command: Command) -> Request {
    Request {
        now_ms: aspen::clock::now_ms(),
        command,
    }
}

// Proves a backup taken over HTTP while a writer keeps writing holds exactly the source's state
// at the backup's revision (key by key: value and mod revision), and that a new node started
// from its restore serves that state, keeps the lease, and continues revisions after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_under_writes_restores_into_a_new_node() {
    let source = TestNode::start(41, |c| c.http.admin_token = TOKEN.into()).await;
    // Every write and the revision it got: the state at any revision can be rebuilt from it.
    let history: Arc<std::sync::Mutex<Vec<Written>>> = Arc::default();
    for batch in 0..10 {
        let puts: Vec<Put> = (0..100)
            .map(|i| Put::new(format!("pre/{batch}/{i:03}"), format!("value {batch} {i}")))
            .collect();
        let command = Command::Write(WriteOp::Txn(Txn {
            compares: vec![],
            success: puts.iter().cloned().map(TxnOp::Put).collect(),
            failure: vec![],
        }));
        let revision = source.write(command).await.expect("preload").revision;
        let mut history = history.lock().unwrap();
        history.extend(puts.into_iter().map(|p| (p.key, p.value, revision)));
    }
    source
        .write(Command::Write(WriteOp::LeaseGrant {
            id: 7,
            ttl_ms: 60_000,
        }))
        .await
        .expect("grant");
    let leased = Put {
        lease: Some(7),
        ..Put::new("leased", "held")
    };
    let revision = source
        .write(Command::Write(WriteOp::Put(leased)))
        .await
        .expect("put")
        .revision;
    history
        .lock()
        .unwrap()
        .push((b"leased".to_vec(), b"held".to_vec(), revision));

    let writer = Writer::start(&source, Arc::clone(&history), |n| {
        Put::new(format!("load/{:02}", n % 50), format!("v{n}"))
    });
    let writes = || history.lock().unwrap().len();
    let before = writes();
    assert!(
        source.wait_until(|_| writes() >= before + 20).await,
        "the writer did not start"
    );

    let files = tempfile::tempdir().unwrap();
    let file = files.path().join("node1.backup");
    let http = source.node.http_address.to_string();
    let (summary, bytes) = tokio::task::spawn_blocking({
        let file = file.clone();
        move || {
            let client = AdminClient::new(&http, Some(TOKEN.into())).unwrap();
            client.backup(&file, |_, _| {})
        }
    })
    .await
    .unwrap()
    .expect("backup");
    assert_eq!(bytes, std::fs::metadata(&file).unwrap().len());
    let after_backup = writes();
    assert!(
        source.wait_until(|_| writes() >= after_backup + 20).await,
        "the writer stopped"
    );
    writer.stop().await;

    let history = history.lock().unwrap().clone();
    let at = summary.revision;
    assert!(
        history.iter().any(|(_, _, r)| *r <= at && *r > revision),
        "no load write in the backup"
    );
    assert!(
        history.iter().any(|(_, _, r)| *r > at),
        "no write after the backup"
    );
    let mut expected = BTreeMap::new();
    for (key, value, r) in history.iter().filter(|(_, _, r)| *r <= at) {
        expected.insert(key.clone(), (value.clone(), *r));
    }
    assert_eq!(summary.keys, expected.len() as u64);
    assert_eq!(summary.leases, 1);

    let restored_dir = tempfile::tempdir().unwrap();
    aspen::storage::restore_backup(&file, restored_dir.path(), 8 << 20, aspen::clock::now_ms())
        .expect("restore");
    let restored = TestNode::start_in(42, restored_dir, |_| {}).await;
    let store = restored.node.store().expect("store");
    let actual = contents(&store);
    assert_eq!(actual.len(), expected.len());
    for (key, value) in &expected {
        assert_eq!(
            actual.get(key),
            Some(value),
            "key {:?} differs from the source at revision {at}",
            String::from_utf8_lossy(key)
        );
    }
    assert_eq!(
        store
            .read(aspen::clock::now_ms())
            .unwrap()
            .lease_keys(7, 10)
            .unwrap(),
        vec![b"leased".to_vec()]
    );
    let next = restored
        .put("after", "restore")
        .await
        .expect("write after restore");
    assert_eq!(
        next.revision,
        at + 1,
        "revisions continue from the backup's"
    );
    restored.shutdown().await;
    source.shutdown().await;
}

// Proves every /admin route answers 401 without the token and with a wrong one, and serves
// with it, while /health stays open; and that /admin/snapshot builds a snapshot at the applied
// index, after which the log behind it is purged (log_entries_kept = 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_need_the_token_and_snapshot_purges_the_log() {
    let node = TestNode::start(43, |c| {
        c.http.admin_token = TOKEN.into();
        c.raft.log_entries_kept = 0;
    })
    .await;
    for i in 0..30 {
        node.put(&format!("k{i}"), "v").await.expect("put");
    }
    let base = format!("http://{}", node.node.http_address);
    let client = reqwest::Client::new();
    for route in ["backup", "snapshot", "shutdown"] {
        let url = format!("{base}/admin/{route}");
        let none = client.post(&url).send().await.unwrap();
        assert_eq!(none.status(), 401, "{route} without a token");
        let body: serde_json::Value = none.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap().contains("bearer token"),
            "{body}"
        );
        let wrong = client
            .post(&url)
            .bearer_auth("t0ken-for-test")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401, "{route} with a wrong token");
    }
    let health = client.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    let applied = node
        .node
        .raft
        .metrics()
        .and_then(|m| m.last_applied)
        .expect("applied")
        .index;
    let answer: serde_json::Value = client
        .post(format!("{base}/admin/snapshot"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let snapshot = answer["snapshot_index"].as_u64().expect("snapshot index");
    assert!(snapshot >= applied, "{answer}");
    assert!(
        wait_purged(&node, snapshot).await,
        "the log was not purged up to the snapshot"
    );
    let store = node.node.store().unwrap();
    assert!(store.log_entries(..=snapshot).unwrap().is_empty());

    let backup = client
        .post(format!("{base}/admin/backup"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(backup.status(), 200);
    let bytes = backup.bytes().await.unwrap();
    let summary = aspen::storage::verify_backup(bytes.as_ref(), |_, _| {}).expect("whole backup");
    assert_eq!(summary.keys, 30);

    let shutdown = client
        .post(format!("{base}/admin/shutdown"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(shutdown.status(), 202);
    tokio::time::timeout(Duration::from_secs(5), node.node.core.shutdown_requested())
        .await
        .expect("shutdown requested");
    node.shutdown().await;
}

// Proves a node with no configured token still guards its admin API: it generates a token
// into DATA_DIR/admin.token (mode 0600, kept across restarts), refuses a call without it, and
// the CLI with --data-dir reads it from there (while --token on the command line is used but
// warned about).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_configured_token_the_node_generates_one_and_admin_needs_it() {
    let node = TestNode::start(48, |_| {}).await;
    let dir = node.dir.path().to_path_buf();
    let file = dir.join(aspen::net::admin::TOKEN_FILE);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&file).expect("admin.token").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let token = aspen::net::admin::read_token(&dir).unwrap();
    assert_eq!(token.len(), 64, "32 random bytes as hex: {token}");
    let base = format!("http://{}", node.node.http_address);
    let client = reqwest::Client::new();
    let none = client
        .post(format!("{base}/admin/snapshot"))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 401);

    let snapshot = aspen_cli(&dir, &["admin", "snapshot"]).await;
    assert!(
        snapshot.status.success(),
        "aspen --data-dir DIR admin snapshot: {}",
        String::from_utf8_lossy(&snapshot.stderr)
    );
    let wrong = aspen_cli(&dir, &["admin", "--token", "not-the-token", "snapshot"]).await;
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(!wrong.status.success(), "a wrong --token was accepted");
    assert!(stderr.contains("warning: --token is visible"), "{stderr}");
    assert!(stderr.contains("bearer token"), "{stderr}");

    let node = node.restart().await;
    assert_eq!(
        aspen::net::admin::read_token(node.dir.path()).unwrap(),
        token
    );
    node.shutdown().await;
}

/// Runs `aspen --data-dir DIR ARGS...` (without `ASPEN_ADMIN_TOKEN`) off the runtime.
async fn aspen_cli(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_aspen"));
    command
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("ASPEN_ADMIN_TOKEN");
    tokio::task::spawn_blocking(move || command.output().expect("run aspen"))
        .await
        .unwrap()
}

/// Puts `count` keys `{prefix}{i:05}` with values of `value_bytes`, 100 per transaction.
async fn fill(node: &TestNode, prefix: &str, count: usize, value_bytes: usize) {
    for start in (0..count).step_by(100) {
        let success = (start..(start + 100).min(count))
            .map(|i| TxnOp::Put(Put::new(format!("{prefix}{i:05}"), vec![b'x'; value_bytes])))
            .collect();
        let txn = Txn {
            compares: vec![],
            success,
            failure: vec![],
        };
        node.write(Command::Write(WriteOp::Txn(txn)))
            .await
            .expect("fill");
    }
}

/// Builds a snapshot now and purges the whole log behind it, so the log no longer holds the
/// deleted values.
async fn snapshot_and_purge(node: &TestNode) {
    node.node
        .raft
        .snapshot(true, Duration::from_secs(10))
        .await
        .expect("snapshot and purge");
}

/// Whether the node's stored log is purged up to `index` within the harness's wait.
async fn wait_purged(node: &TestNode, index: u64) -> bool {
    let store = node.node.store().unwrap();
    node.wait_until(|_| {
        store
            .log_state()
            .unwrap()
            .0
            .is_some_and(|purged| purged.index >= index)
    })
    .await
}

// Proves compaction after deleting most keys shrinks the file, leaves every remaining key as it
// was (value and revisions), and that writes sent while it runs succeed (they wait for it);
// the data dir passes the offline check afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_shrinks_the_file_and_keeps_the_data() {
    let node = TestNode::start(44, |c| {
        c.raft.snapshot_after_entries = 1_000_000;
        c.raft.log_entries_kept = 0;
    })
    .await;
    for part in 0..10 {
        fill(&node, &format!("c/{part}/"), 300, 1024).await;
    }
    for part in 1..10 {
        node.write(Command::Write(WriteOp::DeleteRange(KeyRange::prefix(
            format!("c/{part}/").as_bytes(),
        ))))
        .await
        .expect("delete");
    }
    snapshot_and_purge(&node).await;
    let store = node.node.store().unwrap();
    let kept = contents(&store);
    assert_eq!(kept.len(), 300);

    let acked: Arc<std::sync::Mutex<Vec<Written>>> = Arc::default();
    let writer = Writer::start(&node, Arc::clone(&acked), |n| {
        Put::new(format!("during/{n:05}"), "w")
    });
    let written = || acked.lock().unwrap().len();
    assert!(node.wait_until(|_| written() >= 5).await);
    let http = node.node.http_address.to_string();
    let token = aspen::net::admin::read_token(node.dir.path()).unwrap();
    let answer = tokio::task::spawn_blocking(move || {
        AdminClient::new(&http, Some(token))
            .unwrap()
            .post_json("defrag")
    })
    .await
    .unwrap()
    .expect("compact");
    let at_end = written();
    assert!(node.wait_until(|_| written() >= at_end + 5).await);
    writer.stop().await;
    let writes = written() as u64;

    let before = answer["bytes_before"].as_u64().expect("before");
    let after = answer["bytes_after"].as_u64().expect("after");
    assert!(after < before / 2, "the file did not shrink: {answer}");
    assert!(answer["stalled_ms"].as_f64().is_some(), "{answer}");
    let page = aspen::metrics::render();
    assert!(
        page.contains("aspen_storage_compaction_duration_seconds_count{node_id=\"44\"} 1"),
        "{page}"
    );
    let now = contents(&store);
    for (key, value) in &kept {
        assert_eq!(
            now.get(key),
            Some(value),
            "{:?} changed",
            String::from_utf8_lossy(key)
        );
    }
    let during = now.keys().filter(|k| k.starts_with(b"during/")).count() as u64;
    assert_eq!(
        during, writes,
        "every acknowledged write during compaction is there"
    );
    node.put("after", "compaction")
        .await
        .expect("write after compaction");

    drop(store);
    let TestNode { node, dir, .. } = node;
    node.shutdown().await;
    let report = aspen::storage::check::check_data_dir(dir.path()).expect("check");
    assert!(report.is_ok(), "{:?}", report.problems);
}

/// Small enough to reach in a test; the file of a fresh node is well under it.
const QUOTA_BYTES: u64 = 4 << 20;

// Proves the quota alarm: once the file reaches a small quota, puts, transactions that put and
// lease grants fail with `quota exceeded` while reads, deletes and lease revokes work and
// /health is degraded naming the alarm (aspen_quota_alarm 1; etcd's API lists it as NOSPACE
// and refuses to disarm it by hand); after the deletes, a log purge and a compaction bring
// the file under the quota, the alarm clears by itself (etcd's list is empty) and writes work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_alarm_refuses_writes_until_compaction() {
    // Its own node id: the metric is process-wide and other tests run nodes meanwhile.
    let keys = tempfile::tempdir().unwrap();
    let root_key = aspen::testing::write_root_key(keys.path());
    let node = TestNode::start(45, |c| {
        c.storage.quota_bytes = QUOTA_BYTES;
        c.raft.snapshot_after_entries = 1_000_000;
        c.raft.log_entries_kept = 0;
        c.etcd.address = "127.0.0.1:0".into();
        c.etcd.client_key = root_key.display().to_string();
    })
    .await;
    let endpoint = node
        .node
        .etcd_address()
        .expect("the etcd API is on")
        .to_string();
    let mut etcd = etcd_client::Client::connect([endpoint], None)
        .await
        .unwrap();
    let alarms = async |etcd: &mut etcd_client::Client| {
        let list = etcd
            .alarm(
                etcd_client::AlarmAction::Get,
                etcd_client::AlarmType::None,
                None,
            )
            .await
            .unwrap();
        list.alarms()
            .iter()
            .map(|a| (a.member_id(), a.alarm()))
            .collect::<Vec<_>>()
    };
    assert_eq!(alarms(&mut etcd).await, []);
    node.write(Command::Write(WriteOp::LeaseGrant {
        id: 9,
        ttl_ms: 600_000,
    }))
    .await
    .expect("grant");
    let big = 64 << 10;
    let mut refused = None;
    for i in 0..200 {
        match node
            .write(Command::Write(WriteOp::Put(Put::new(
                format!("big/{i:03}"),
                vec![b'x'; big],
            ))))
            .await
        {
            Ok(_) => {}
            Err(NodeError::Command(error)) => {
                refused = Some(error);
                break;
            }
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    let refused = refused.expect("the quota was never reached");
    assert!(matches!(
        refused,
        CommandError::QuotaExceeded {
            quota: QUOTA_BYTES,
            ..
        }
    ));
    assert!(
        refused.to_string().starts_with("quota exceeded: "),
        "{refused}"
    );
    let txn = Command::Write(WriteOp::Txn(Txn {
        compares: vec![],
        success: vec![TxnOp::Put(Put::new("t", "v"))],
        failure: vec![],
    }));
    for command in [
        txn,
        Command::Write(WriteOp::LeaseGrant {
            id: 10,
            ttl_ms: 1_000,
        }),
    ] {
        assert!(matches!(
            node.write(command).await,
            Err(NodeError::Command(CommandError::QuotaExceeded { .. }))
        ));
    }
    // Reads work.
    node.node.read_barrier().await.expect("read barrier");
    let store = node.node.store().unwrap();
    assert!(
        store
            .read(aspen::clock::now_ms())
            .unwrap()
            .get(b"big/000")
            .unwrap()
            .is_some()
    );
    // The health check names the alarm; the node is degraded, not unhealthy. Awaited as one
    // condition: a ping that misses its 100 ms on a loaded machine makes one round critical.
    let degraded = |n: &TestNode| {
        let health = n.node.board.health();
        health.status == NodeHealth::Degraded
            && health
                .checks
                .get("quota")
                .is_some_and(|c| c.status == CheckStatus::Warning)
    };
    assert!(
        node.wait_until(degraded).await,
        "{:?}",
        node.node.board.health()
    );
    let health = node.node.board.health();
    let message = health.checks["quota"].message.clone().unwrap();
    assert!(message.starts_with("quota alarm: "), "{message}");
    let page = aspen::metrics::render();
    assert!(
        page.contains("aspen_quota_alarm{node_id=\"45\"} 1"),
        "{page}"
    );
    // etcd's API lists it as NOSPACE of this member, and refuses to disarm it by hand.
    assert_eq!(
        alarms(&mut etcd).await,
        [(45, etcd_client::AlarmType::Nospace)]
    );
    let disarm = etcd
        .alarm(
            etcd_client::AlarmAction::Deactivate,
            etcd_client::AlarmType::Nospace,
            None,
        )
        .await
        .unwrap_err();
    assert!(disarm.to_string().contains("lifts by itself"), "{disarm}");

    // Deletes and revokes work under the alarm.
    node.write(Command::Write(WriteOp::DeleteRange(KeyRange::prefix(
        b"big/".as_slice(),
    ))))
    .await
    .expect("delete under the alarm");
    node.write(Command::Write(WriteOp::LeaseRevoke { id: 9 }))
        .await
        .expect("revoke under the alarm");
    // The file keeps its size until compaction: the alarm stays on.
    assert!(node.node.core.quota_alarm().is_some());
    snapshot_and_purge(&node).await;
    let compaction = store.compact(Duration::from_secs(5)).expect("compact");
    assert!(
        compaction.bytes_after.unwrap() < QUOTA_BYTES,
        "{compaction:?}"
    );
    assert_eq!(node.node.core.quota_alarm(), None);
    assert_eq!(alarms(&mut etcd).await, []);
    node.put("after", "compaction")
        .await
        .expect("write after the alarm cleared");
    assert!(
        node.wait_until(|n| n
            .node
            .board
            .health()
            .checks
            .get("quota")
            .is_some_and(|c| c.status == CheckStatus::Ok))
            .await
    );
    node.shutdown().await;
}

// Proves the vault limits configured on the leader are replicated and enforced (a new key in a
// full vault and a vault past the limit are refused with errors naming them; an overwrite is
// not a new key), and that `vault list` over the client protocol, SQL's `vaults` table and the
// per-vault operation counters report the vaults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_limits_list_sql_and_metrics() {
    let node = TestNode::start(46, |c| {
        c.storage.vaults_max = 2;
        c.storage.vault_keys_max = 3;
    })
    .await;
    let store = node.node.store().unwrap();
    let configured = aspen::command::VaultLimits {
        vaults_max: 2,
        keys_per_vault_max: 3,
    };
    assert!(
        node.wait_until(|_| store.read(0).unwrap().vault_limits().unwrap() == configured)
            .await,
        "the leader did not set its vault limits"
    );
    let client = aspen::testing::root_client(&[node.node.address()])
        .await
        .unwrap();
    for i in 0..3 {
        client.put(format!("vault/alpha/{i}"), "v").await.unwrap();
    }
    let full = client
        .put("vault/alpha/3", "v")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        full.contains("vault \"alpha\" is full (its limit is 3 keys)"),
        "{full}"
    );
    client
        .put("vault/alpha/0", "overwritten")
        .await
        .expect("an overwrite is no new key");
    client.put("vault/beta/x", "v").await.unwrap();
    let too_many = client
        .put("vault/gamma/x", "v")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        too_many.contains("2 vaults exist; vault \"gamma\" was not created"),
        "{too_many}"
    );
    let bad = client
        .put("vault/no slash", "v")
        .await
        .unwrap_err()
        .to_string();
    assert!(bad.contains("is not a vault key"), "{bad}");
    assert!(
        store
            .read(0)
            .unwrap()
            .get(b"vault/gamma/x")
            .unwrap()
            .is_none()
    );

    let vaults = client.vault_list().await.unwrap();
    let names: Vec<&str> = vaults.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["alpha", "beta"]);
    let alpha = vaults[0].meta;
    assert_eq!(alpha.key_count, 3);
    // Keys "vault/alpha/N" (13 bytes) with values "overwritten" (11) and "v" (1) twice.
    assert_eq!(alpha.total_bytes, 3 * 13 + 11 + 1 + 1);
    assert!(alpha.updated_revision > alpha.created_revision);

    let sql = client
        .sql("SELECT name, key_count, total_bytes FROM vaults ORDER BY name")
        .await
        .unwrap();
    let rows: Vec<String> = sql.rows.iter().map(|row| format!("{row:?}")).collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(
        rows[0].contains("\"alpha\"") && rows[0].contains("Int(3)") && rows[0].contains("Int(52)"),
        "{rows:?}"
    );

    let page = aspen::metrics::render();
    let puts = page
        .lines()
        .find(|line| {
            line.starts_with("aspen_vault_operations_total{")
                && line.contains("node_id=\"46\"")
                && line.contains("vault=\"alpha\"")
                && line.contains("op=\"put\"")
        })
        .unwrap_or_else(|| panic!("no per-vault counter: {page}"));
    // Five puts reached the state machine for alpha (three new keys, the refused fourth, the
    // overwrite).
    assert!(puts.ends_with(" 5"), "{puts}");
    node.shutdown().await;
}

/// Kills the child on drop, so a failing assertion never leaves a node running.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `aspen-node` on `dir` with the admin token, logging every request as slow (to
/// `dir/node.log`).
fn start_node_process(dir: &std::path::Path) -> Reaped {
    let log = std::fs::File::create(dir.join("node.log")).expect("log file");
    let child = Process::new(env!("CARGO_BIN_EXE_aspen-node"))
        .args([
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/node.toml"),
        ])
        .env("ASPEN_NODE__DATA_DIR", dir)
        .env("ASPEN_HTTP__ADDRESS", "127.0.0.1:0")
        .env("ASPEN_ETCD__ADDRESS", "127.0.0.1:0")
        .env("ASPEN_NET__ADDRESS", "127.0.0.1:0")
        .env("ASPEN_HTTP__ADMIN_TOKEN", TOKEN)
        .env("ASPEN_NET__SLOW_REQUEST_MS", "0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn aspen-node");
    Reaped(child)
}

/// Runs `aspen` (or `aspen-node` when `node`), returns (success, stdout, stderr).
fn run(node: bool, args: &[&str]) -> (bool, String, String) {
    let binary = if node {
        env!("CARGO_BIN_EXE_aspen-node")
    } else {
        env!("CARGO_BIN_EXE_aspen")
    };
    let out = Process::new(binary)
        .args(args)
        .env_remove("ASPEN_ADMIN_TOKEN")
        .env_remove("ASPEN_HTTP")
        .output()
        .expect("run");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `aspen` until it succeeds (the node elects itself and writes its files first).
async fn run_until_ok(args: &[&str]) -> String {
    for _ in 0..400 {
        let (ok, stdout, _) = run(false, args);
        if ok {
            return stdout;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (_, _, stderr) = run(false, args);
    panic!("aspen {args:?} kept failing: {stderr}");
}

// Proves, with real processes: `aspen admin` is refused without the token; `aspen admin backup`
// (written 0600) and `snapshot` work with it; `aspen admin shutdown` stops the node with exit 0, the store
// closed by its last holder, and leaves nothing to replay (`aspen-node check` passes); `aspen-node restore` refuses a truncated
// file and restores the whole one; a node process started on the restore serves the keys to
// the original node's root client (the restore keeps clients and roles), not to the key the
// new node made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_shutdown_check_and_restore_as_processes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let mut node = start_node_process(dir.path());
    for i in 0..5 {
        run_until_ok(&["--data-dir", data, "put", &format!("vault/ops/{i}"), "v"]).await;
    }

    let backup = dir.path().join("b.backup");
    let backup_arg = backup.to_str().unwrap();
    let (ok, _, stderr) = run(
        false,
        &["--data-dir", data, "admin", "backup", "--out", backup_arg],
    );
    assert!(!ok && stderr.contains("401"), "{stderr}");
    assert!(!backup.exists(), "a refused backup left a file");
    let admin = ["--data-dir", data, "admin", "--token", TOKEN];
    let (ok, stdout, stderr) = run(
        false,
        &[&admin[..], &["backup", "--out", backup_arg][..]].concat(),
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("5 keys, 0 leases, revision 5"), "{stdout}");
    // The backup holds every key: private to its owner.
    let mode = std::fs::metadata(&backup).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    let (ok, stdout, stderr) = run(false, &[&admin[..], &["snapshot"][..]].concat());
    assert!(
        ok && stdout.starts_with("snapshot at log index "),
        "{stdout}{stderr}"
    );
    let (ok, stdout, stderr) = run(false, &[&admin[..], &["defrag"][..]].concat());
    assert!(ok && stdout.starts_with("compacted: "), "{stdout}{stderr}");

    let (ok, stdout, stderr) = run(false, &[&admin[..], &["shutdown"][..]].concat());
    assert!(ok && stdout.contains("shutting down"), "{stdout}{stderr}");
    let mut exited = None;
    for _ in 0..400 {
        exited = node.0.try_wait().unwrap();
        if exited.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(exited.expect("the node exited").success());
    // The file was closed by its last holder, not left behind by the stop.
    let log = std::fs::read_to_string(dir.path().join("node.log")).unwrap();
    assert!(!log.contains("still held open"), "{log}");

    let (ok, stdout, stderr) = run(true, &["check", "--data-dir", data]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("(0 entries to replay on start)"),
        "{stdout}"
    );
    assert!(stdout.contains("state: 5 keys"), "{stdout}");

    let truncated = dir.path().join("cut.backup");
    let whole = std::fs::read(&backup).unwrap();
    std::fs::write(&truncated, &whole[..whole.len() - 3]).unwrap();
    let target = dir.path().join("restored");
    let target_arg = target.to_str().unwrap();
    let (ok, _, stderr) = run(
        true,
        &[
            "restore",
            "--from",
            truncated.to_str().unwrap(),
            "--data-dir",
            target_arg,
        ],
    );
    assert!(!ok && stderr.contains("truncated"), "{stderr}");
    assert!(!target.exists(), "a refused restore created the data dir");
    let (ok, stdout, stderr) = run(
        true,
        &["restore", "--from", backup_arg, "--data-dir", target_arg],
    );
    assert!(ok, "{stderr}");
    assert!(
        stdout.starts_with("restored 5 keys and 0 leases at revision 5"),
        "{stdout}"
    );

    // The restored state keeps its clients and roles (as etcd's restore keeps auth): the
    // original node's root key reads it; the key the new node made for itself is no one.
    let _restored = start_node_process(&target);
    let original_key = dir.path().join(aspen::node::CLIENT_KEY_FILE);
    let original_key = original_key.to_str().unwrap();
    let keys = run_until_ok(&[
        "--data-dir",
        target_arg,
        "--key",
        original_key,
        "get",
        "vault/ops/",
        "--prefix",
        "--keys-only",
    ])
    .await;
    assert_eq!(keys.lines().count(), 5, "{keys}");
    let (ok, _, stderr) = run(false, &["--data-dir", target_arg, "get", "vault/ops/0"]);
    assert!(
        !ok && stderr.contains("not known to the cluster"),
        "{stderr}"
    );
    let vaults = run_until_ok(&[
        "--data-dir",
        target_arg,
        "--key",
        original_key,
        "vault",
        "list",
    ])
    .await;
    assert!(vaults.contains("| ops   | 5    |"), "{vaults}");

    // With slow_request_ms = 0 every request was logged, with its key, vault, duration and
    // revision.
    let log = std::fs::read_to_string(dir.path().join("node.log")).unwrap();
    let line = log
        .lines()
        .find(|line| line.contains("slow operation") && line.contains("vault/ops/4"))
        .unwrap_or_else(|| panic!("no slow operation line for vault/ops/4: {log}"));
    for field in ["op=\"put\"", "vault=\"ops\"", "duration_ms=", "revision=5"] {
        assert!(line.contains(field), "{field} missing: {line}");
    }
}

// Proves group commit on a node: 64 writes submitted at once are each answered with their own
// revision and their own key's previous value, every revision from 65 to 128 once, and they
// took fewer log entries than writes (the ones queued behind an entry in flight shared the
// next one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_log_entries_and_get_their_own_answers() {
    const WRITES: u64 = 64;
    let node = TestNode::start(47, |_| {}).await;
    for i in 0..WRITES {
        node.put(&format!("k{i}"), &format!("old{i}"))
            .await
            .expect("seed");
    }
    let before = node.node.raft.metrics().unwrap().last_log_index.unwrap();
    let tasks: Vec<_> = (0..WRITES)
        .map(|i| {
            let core = Arc::clone(&node.node.core);
            tokio::spawn(async move {
                let put = Put {
                    prev_kv: true,
                    ..Put::new(format!("k{i}"), format!("v{i}"))
                };
                let response = core.write(request(Command::Write(WriteOp::Put(put)))).await;
                (i, response)
            })
        })
        .collect();
    let mut revisions = Vec::new();
    for task in tasks {
        let (i, response) = task.await.unwrap();
        let response = response.expect("a concurrent write failed");
        let Ok(aspen::api::Output::Put { prev: Some(prev) }) = &response.result else {
            panic!("write {i}: {response:?}");
        };
        assert_eq!(
            (prev.key.as_slice(), prev.value.as_slice()),
            (format!("k{i}").as_bytes(), format!("old{i}").as_bytes()),
            "write {i} got another write's answer"
        );
        revisions.push(response.revision);
    }
    revisions.sort();
    assert_eq!(revisions, (WRITES + 1..=2 * WRITES).collect::<Vec<_>>());
    let after = node.node.raft.metrics().unwrap().last_log_index.unwrap();
    assert!(
        after - before < WRITES,
        "{WRITES} writes took {} log entries",
        after - before
    );
    let store = node.node.store().unwrap();
    let stored = contents(&store);
    for i in 0..WRITES {
        let (value, _) = &stored[format!("k{i}").as_bytes()];
        assert_eq!(value, format!("v{i}").as_bytes());
    }
    node.shutdown().await;
}
