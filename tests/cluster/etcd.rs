//! etcd's own command-line client, `etcdctl` 3.4 (Debian's `etcd-client`, which `.ci/run`
//! installs), against Aspen's etcd API: its output, line for line, as etcd 3.4 prints it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::{Cluster, NodeProcess, etcd_addresses, start_process_cluster};

/// What an etcdctl run printed.
pub(crate) struct Run {
    pub(crate) ok: bool,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

pub(crate) fn etcdctl(endpoints: &str, args: &[&str], stdin: Option<&str>) -> Run {
    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .args(args)
        .stdin(match stdin {
            Some(_) => Stdio::piped(),
            None => Stdio::null(),
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("etcdctl (Debian's etcd-client package; .ci/run installs it)");
    if let Some(text) = stdin {
        use std::io::Write;
        let mut input = child.stdin.take().expect("stdin");
        input.write_all(text.as_bytes()).unwrap();
    }
    let output = child.wait_with_output().expect("etcdctl output");
    Run {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// An etcdctl that runs on (a watch, a lock holder) while the test reads its output lines;
/// killed and reaped when dropped.
struct Running {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Running {
    fn start(endpoints: &str, args: &[&str]) -> Running {
        let mut child = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoints}"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcdctl");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Running { child, lines }
    }

    /// Its next `n` lines, each within 20 s.
    fn next(&self, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| {
                self.lines
                    .recv_timeout(Duration::from_secs(20))
                    .expect("a line from etcdctl")
            })
            .collect()
    }

    /// Interrupts it (as Ctrl-C does: a lock holder lets go of its lock) and waits for it.
    fn interrupt(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-INT", &pid]).status().unwrap();
        assert!(sent.success());
        self.child.wait().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The revision of the cluster now, from a get's header.
fn revision(endpoints: &str) -> u64 {
    let run = etcdctl(endpoints, &["get", "nothing", "-w", "json"], None);
    assert!(run.ok, "{}", run.stderr);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    json["header"]["revision"].as_u64().expect("a revision")
}

// Proves etcdctl's put, get (prefix, limit, sort, keys only, at a revision), txn, del (a prefix with --prev-kv), watch
// (replay and live), put keeping the value or the lease, lease
// grant/attach/timetolive/list/keep-alive/revoke, member list,
// member add (as a learner, and as a voter), promote and remove, endpoint status and hashkv, and
// compaction
// work against a 3-node cluster of real processes through any member, printing what etcd
// 3.4 prints (the expected lines were taken from etcd 3.4.23 on this machine), and that a
// compacted revision, a voter's promotion and an unknown member get etcd's errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_works_against_a_three_node_cluster() {
    let root = tempfile::tempdir().unwrap();
    let (nodes, _) = start_process_cluster(root.path(), 1..=3, &[]).await;
    let endpoints: Vec<String> = etcd_addresses(&nodes).await.into_values().collect();
    let all = endpoints.join(",");
    let run = |args: &[&str]| {
        let run = etcdctl(&all, args, None);
        assert!(run.ok, "etcdctl {args:?}: {}{}", run.stdout, run.stderr);
        run.stdout
    };

    assert_eq!(run(&["put", "hello", "world"]), "OK\n");
    let first = revision(&all);
    assert_eq!(run(&["get", "hello"]), "hello\nworld\n");
    assert_eq!(
        run(&["put", "hello", "w2", "--prev-kv"]),
        "OK\nhello\nworld\n"
    );
    assert_eq!(
        run(&["get", "hello", &format!("--rev={first}")]),
        "hello\nworld\n"
    );
    // Each member answers for itself too.
    for endpoint in &endpoints {
        let run = etcdctl(endpoint, &["get", "hello"], None);
        assert_eq!(run.stdout, "hello\nw2\n", "{endpoint}: {}", run.stderr);
    }

    run(&["put", "a/1", "x"]);
    run(&["put", "a/2", "y"]);
    assert_eq!(run(&["get", "a/", "--prefix"]), "a/1\nx\na/2\ny\n");
    assert_eq!(run(&["get", "a/", "--prefix", "--limit=1"]), "a/1\nx\n");
    assert_eq!(
        run(&[
            "get",
            "a/",
            "--prefix",
            "--sort-by=VALUE",
            "--order=DESCEND"
        ]),
        "a/2\ny\na/1\nx\n"
    );
    assert_eq!(
        run(&["get", "a/", "--prefix", "--keys-only"]),
        "a/1\n\na/2\n\n"
    );

    let txn = |compare: &str| {
        let input = format!("{compare}\n\nput x yes\n\nput x no\n\n");
        let run = etcdctl(&all, &["txn"], Some(&input));
        assert!(run.ok, "{}", run.stderr);
        run.stdout
    };
    assert_eq!(txn(r#"value("x") = "y""#), "FAILURE\n\nOK\n");
    assert_eq!(run(&["get", "x"]), "x\nno\n");
    assert_eq!(txn(r#"value("x") = "no""#), "SUCCESS\n\nOK\n");
    assert_eq!(run(&["get", "x"]), "x\nyes\n");
    run(&["put", "a/3", "z"]);
    assert_eq!(
        run(&["del", "a/", "--prefix", "--prev-kv"]),
        "3\na/1\nx\na/2\ny\na/3\nz\n"
    );

    // A watch from the next revision sees a put and a delete.
    let next = revision(&all) + 1;
    let watch = Running::start(&all, &["watch", "w/", "--prefix", &format!("--rev={next}")]);
    run(&["put", "w/1", "a"]);
    run(&["del", "w/1"]);
    let lines = watch.next(5);
    drop(watch);
    assert_eq!(lines, ["PUT", "w/1", "a", "DELETE", "w/1"]);

    let granted = run(&["lease", "grant", "60"]);
    let id = granted
        .split_whitespace()
        .nth(1)
        .expect("a lease id")
        .to_string();
    assert_eq!(granted, format!("lease {id} granted with TTL(60s)\n"));
    assert_eq!(run(&["put", "--lease", &id, "lk", "lv"]), "OK\n");
    // A put keeping the value, then one keeping the lease.
    assert_eq!(run(&["put", "lk", "--ignore-value"]), "OK\n");
    assert_eq!(run(&["get", "lk"]), "lk\nlv\n");
    // (The put keeping the value sent no lease, so it left the lease, as etcd's does.)
    assert_eq!(run(&["put", "--lease", &id, "lk", "lv"]), "OK\n");
    assert_eq!(run(&["put", "lk", "lv2", "--ignore-lease"]), "OK\n");
    let kept = etcdctl(&all, &["get", "lk", "-w", "json"], None).stdout;
    let kept: serde_json::Value = serde_json::from_str(&kept).unwrap();
    assert_eq!(
        format!("{:016x}", kept["kvs"][0]["lease"].as_u64().unwrap()),
        id
    );
    let missing = etcdctl(&all, &["put", "nothing-here", "--ignore-value"], None);
    assert!(
        !missing.ok && missing.stderr.contains("Error: etcdserver: key not found"),
        "{}",
        missing.stderr
    );
    let ttl = run(&["lease", "timetolive", &id, "--keys"]);
    assert!(
        ttl.starts_with(&format!("lease {id} granted with TTL(60s), remaining(5"))
            && ttl.ends_with("s), attached keys([lk])\n"),
        "{ttl}"
    );
    assert_eq!(run(&["lease", "list"]), format!("found 1 leases\n{id}\n"));
    assert_eq!(
        run(&["lease", "keep-alive", "--once", &id]),
        format!("lease {id} keepalived with TTL(60)\n")
    );
    assert_eq!(
        run(&["lease", "revoke", &id]),
        format!("lease {id} revoked\n")
    );
    assert_eq!(run(&["get", "lk"]), "");
    assert_eq!(
        run(&["lease", "timetolive", &id]),
        format!("lease {id} already expired\n")
    );
    // A keep-alive of a lease that is gone: TTL 0, which etcd's client reports as not found.
    let gone = etcdctl(&all, &["lease", "keep-alive", "--once", &id], None);
    assert!(
        !gone.ok
            && gone
                .stderr
                .contains("Error: etcdserver: requested lease not found"),
        "{}",
        gone.stderr
    );

    let members = run(&["member", "list"]);
    let lines: Vec<&str> = members.lines().collect();
    assert_eq!(lines.len(), 3, "{members}");
    for (line, id) in lines.iter().zip(1..) {
        assert!(
            line.starts_with(&format!("{id}, started, node{id}, ")) && line.ends_with(", false"),
            "{line}"
        );
    }
    // A node added as a learner the etcd way (its peer URL is its Aspen address; Aspen asks
    // it for its node id) is listed as one, promoted and removed.
    let learner = NodeProcess::start(4, &root.path().join("n4"), "none");
    let peer = format!("http://{}", learner.address().await);
    let added = run(&[
        "member",
        "add",
        "node4",
        &format!("--peer-urls={peer}"),
        "--learner",
    ]);
    assert!(
        added.starts_with("Member") && added.contains("4 added to cluster"),
        "{added}"
    );
    let twice = etcdctl(
        &all,
        &["member", "add", "n", &format!("--peer-urls={peer}")],
        None,
    );
    assert!(
        twice
            .stderr
            .contains("etcdserver: Peer URLs already exists"),
        "{}",
        twice.stderr
    );
    let bad = etcdctl(
        &all,
        &["member", "add", "n", "--peer-urls=http://127.0.0.1:1"],
        None,
    );
    assert!(
        bad.stderr
            .contains("etcdserver: given member URLs are invalid"),
        "{}",
        bad.stderr
    );
    let listed = run(&["member", "list"]);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("4, started, node4, ") && l.ends_with(", true")),
        "{listed}"
    );
    let promoted = run(&["member", "promote", "4"]);
    assert!(
        promoted.starts_with("Member") && promoted.contains("4 promoted in cluster"),
        "{promoted}"
    );
    let again = etcdctl(&all, &["member", "promote", "4"], None);
    assert!(!again.ok);
    assert!(
        again
            .stderr
            .contains("etcdserver: can only promote a learner member"),
        "{}",
        again.stderr
    );
    let removed = run(&["member", "remove", "4"]);
    assert!(
        removed.starts_with("Member") && removed.contains("4 removed from cluster"),
        "{removed}"
    );
    assert_eq!(run(&["member", "list"]).lines().count(), 3);
    let unknown = etcdctl(&all, &["member", "remove", "9"], None);
    assert!(
        unknown.stderr.contains("etcdserver: member not found"),
        "{}",
        unknown.stderr
    );
    drop(learner);
    // Without --learner the new node is added, caught up and promoted to a voter.
    let voter = NodeProcess::start(5, &root.path().join("n5"), "none");
    let peer = format!("http://{}", voter.address().await);
    let added = run(&["member", "add", "node5", &format!("--peer-urls={peer}")]);
    assert!(added.contains("5 added to cluster"), "{added}");
    let listed = run(&["member", "list"]);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("5, started, node5, ") && l.ends_with(", false")),
        "{listed}"
    );
    run(&["member", "remove", "5"]);
    drop(voter);

    let status = run(&["endpoint", "status"]);
    let leaders = status
        .lines()
        .filter(|line| line.split(", ").nth(4) == Some("true"))
        .count();
    assert_eq!(status.lines().count(), 3, "{status}");
    assert_eq!(leaders, 1, "{status}");

    // Every member hashes the same key space.
    let hashes = run(&["endpoint", "hashkv"]);
    let hashes: Vec<&str> = hashes
        .lines()
        .map(|line| line.rsplit(", ").next().unwrap())
        .collect();
    assert_eq!(hashes.len(), 3, "{hashes:?}");
    assert!(
        hashes
            .iter()
            .all(|h| *h == hashes[0] && h.parse::<u32>().is_ok()),
        "{hashes:?}"
    );

    let now = revision(&all);
    assert_eq!(
        run(&["compaction", &now.to_string()]),
        format!("compacted revision {now}\n")
    );
    let old = etcdctl(&all, &["get", "hello", &format!("--rev={first}")], None);
    assert!(!old.ok);
    assert!(
        old.stderr
            .contains("Error: etcdserver: mvcc: required revision has been compacted"),
        "{}",
        old.stderr
    );
    let old = etcdctl(&all, &["watch", "hello", &format!("--rev={first}")], None);
    assert!(!old.ok);
    assert!(
        old.stderr.contains(
            "watch was canceled (etcdserver: mvcc: required revision has been compacted)"
        ),
        "{}{}",
        old.stdout,
        old.stderr
    );
}

// Proves etcd's lock and election recipes work through etcdctl (its concurrency package,
// whose transaction reads the range sorted by create revision with a limit of 1): a second
// locker waits while the first holds the lock, and runs its command only after the first
// lets go; an elected candidate is the leader a listener hears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_lock_and_elect_work() {
    let root = tempfile::tempdir().unwrap();
    let (nodes, _) = start_process_cluster(root.path(), 1..=3, &[]).await;
    let endpoints: Vec<String> = etcd_addresses(&nodes).await.into_values().collect();
    let all = endpoints.join(",");
    let keys = |prefix: &str| {
        let run = etcdctl(&all, &["get", prefix, "--prefix", "--keys-only"], None);
        assert!(run.ok, "{}", run.stderr);
        run.stdout
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect::<Vec<_>>()
    };

    // Without a command, etcdctl lock prints the key it holds the lock with, and holds it
    // until interrupted.
    let mut first = Running::start(&all, &["lock", "job"]);
    let held = first.next(2);
    assert!(
        held[0].starts_with("job/") && held[1].is_empty(),
        "{held:?}"
    );
    let log = |value: &str| {
        let run = etcdctl(&all, &["put", "job-log", value], None);
        assert!(run.ok, "{}", run.stderr);
    };
    log("first held it");
    // The second runs a command once it holds the lock: it writes to the same log.
    let command = format!("ETCDCTL_API=3 etcdctl --endpoints={all} put job-log 'second held it'");
    let mut second = Running::start(&all, &["lock", "job", "--", "sh", "-c", &command]);
    crate::util::eventually("the second locker's key", || async {
        keys("job/").len() == 2
    })
    .await;
    let by_creation = etcdctl(
        &all,
        &[
            "get",
            "job/",
            "--prefix",
            "--keys-only",
            "--sort-by=CREATE",
            "--order=ASCEND",
        ],
        None,
    );
    assert_eq!(
        by_creation.stdout.lines().next(),
        Some(held[0].as_str()),
        "the first's key is the older"
    );
    // It waits. There is no event to await for that: a second of silence makes sure that a
    // lock the second wrongly took would have run its command (seen in the log below).
    let early = second.lines.recv_timeout(Duration::from_secs(1));
    assert!(
        early.is_err(),
        "ran while the first held the lock: {early:?}"
    );
    log("first let go");
    assert!(first.interrupt().success());
    assert_eq!(second.next(1), ["OK"], "the second's command ran");
    assert!(second.child.wait().unwrap().success());
    // The log's history, replayed by a watch from its first version: the second wrote after
    // the first let go, not while the first held the lock.
    let run = etcdctl(&all, &["get", "job-log", "-w", "json"], None);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let created = json["kvs"][0]["create_revision"].as_u64().expect("created");
    let watch = Running::start(&all, &["watch", "job-log", &format!("--rev={created}")]);
    let (put, key) = ("PUT", "job-log");
    assert_eq!(
        watch.next(9),
        [
            put,
            key,
            "first held it",
            put,
            key,
            "first let go",
            put,
            key,
            "second held it"
        ]
    );
    assert!(keys("job/").is_empty(), "both let go of the lock");

    // A candidate is elected at once (no other), and a listener hears it as the leader.
    let candidate = Running::start(&all, &["elect", "pick", "alice"]);
    let elected = candidate.next(2);
    assert!(
        elected[0].starts_with("pick/") && elected[1] == "alice",
        "{elected:?}"
    );
    let listener = Running::start(&all, &["elect", "-l", "pick"]);
    assert_eq!(listener.next(2), elected);
}

// Proves a node whose etcd API has no Aspen identity (no `etcd.client_key`) refuses etcd's
// clients when auth is on (a member add before dialing anything, a snapshot, a defragment),
// with etcd's permission-denied error naming why, and keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_identity_the_etcd_api_is_refused() {
    let cluster = Cluster::start(127, 1, |config| {
        config.etcd.address = "127.0.0.1:0".into();
    })
    .await;
    let endpoint = cluster.nodes[&127]
        .node
        .etcd_address()
        .expect("the etcd API is on")
        .to_string();
    let refused = etcdctl(&endpoint, &["put", "k", "v"], None);
    assert!(!refused.ok);
    assert!(
        refused.stderr.contains("etcdserver: permission denied"),
        "{}",
        refused.stderr
    );
    let refused = etcdctl(&endpoint, &["get", "k"], None);
    assert!(refused.stderr.contains("etcdserver: permission denied"));
    // A member add is refused before the node dials the address it names.
    let peer = format!(
        "--peer-urls=http://{}@127.0.0.1:9",
        aspen::testing::root_id()
    );
    let refused = etcdctl(&endpoint, &["member", "add", "n", &peer], None);
    assert!(
        refused.stderr.contains("member add needs the root role"),
        "{}",
        refused.stderr
    );
    // So are the member-wide maintenance calls: a snapshot and a defragment need root.
    let file = tempfile::tempdir().unwrap();
    let path = file.path().join("snap.db");
    for (args, what) in [
        (vec!["snapshot", "save", path.to_str().unwrap()], "snapshot"),
        (vec!["defrag"], "defragment"),
    ] {
        let refused = etcdctl(&endpoint, &args, None);
        assert!(!refused.ok);
        assert!(
            refused
                .stderr
                .contains(&format!("{what} needs the root role")),
            "{}",
            refused.stderr
        );
    }
    assert!(!path.exists());
    assert!(cluster.client().await.put("k", "v").await.is_ok());
    cluster.shutdown().await;
}
