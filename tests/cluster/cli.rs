use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use crate::util::NodeProcess;

/// The `aspen-node cluster` process; SIGTERM and reaped on drop.
struct LocalCluster(Child);

impl Drop for LocalCluster {
    fn drop(&mut self) {
        terminate(&self.0);
        let _ = self.0.wait();
    }
}

fn terminate(child: &Child) {
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
}

/// The client key `aspen-node cluster` printed (`export ASPEN_KEY=...`): the cluster's root.
static KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Runs `aspen ARGS` against `nodes` with the printed key; returns (exit code, stdout,
/// stderr).
fn aspen(nodes: &str, args: &[&str]) -> (i32, String, String) {
    aspen_as(KEY.get().expect("the cluster printed its key"), nodes, args)
}

/// Runs `aspen ARGS` against `nodes` as the client whose key file is `key`.
fn aspen_as(key: &str, nodes: &str, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_aspen"))
        .args(args)
        .env("ASPEN_NODE", nodes)
        .env("ASPEN_KEY", key)
        .output()
        .expect("run aspen");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs `aspen ARGS`, asserts exit 0 and returns stdout.
fn ok(nodes: &str, args: &[&str]) -> String {
    let (code, stdout, stderr) = aspen(nodes, args);
    assert_eq!(code, 0, "aspen {args:?} failed: {stderr}");
    stdout
}

/// Runs `aspen ARGS`, asserts a non-zero exit with one line on stderr containing `expected`.
fn fails(nodes: &str, args: &[&str], expected: &str) {
    let (code, stdout, stderr) = aspen(nodes, args);
    assert_ne!(code, 0, "aspen {args:?} succeeded: {stdout}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(expected), "aspen {args:?}: {stderr}");
}

// Proves every `aspen` command against a local cluster started by `aspen-node cluster`:
// output and exit code of put/get (prefix, range, limit, keys-only, count, stale, at a
// revision, refused once compacted or past the current one), watch from a revision, compact,
// del, txn
// from flags and from a JSON file, lease grant/keepalive/list/revoke, cluster
// status/members/remove/add-learner/promote/init, sql (on the leader and on a follower;
// table, JSON and CSV), bench (every workload, JSON and text, bad options), auth (whoami, list,
// client add/revoke/remove, role add/grant/revoke/remove; a second client's key file made 0600,
// its read allowed and its write refused on one line), one-line errors with exit 1 (also for a
// --base-port that leaves no room); and that the local cluster stops every node on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cli_command_against_a_local_cluster() {
    let root = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_aspen-node"))
        .args(["cluster", "--nodes", "3", "--data-dir"])
        .arg(root.path().join("cluster"))
        // The user's own client key (made root too) goes under this HOME, not the real one.
        .env("HOME", root.path())
        .env_remove("ASPEN_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn aspen-node cluster");
    let stdout = child.stdout.take().unwrap();
    let cluster = LocalCluster(child);
    let mut lines = BufReader::new(stdout).lines();
    let mut nodes = String::new();
    let mut printed = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(list) = line.trim().strip_prefix("export ASPEN_NODE=") {
            nodes = list.to_string();
        }
        if let Some(key) = line.trim().strip_prefix("export ASPEN_KEY=") {
            KEY.set(key.to_string()).expect("one key line");
        }
        printed.push(line.clone());
        if line.starts_with("Ctrl-C") {
            break;
        }
    }
    assert!(printed[0].starts_with("aspen local cluster: 3 nodes, leader is node "));
    assert_eq!(nodes.split(',').count(), 3, "{printed:?}");
    let n = nodes.as_str();

    assert_eq!(ok(n, &["put", "a/1", "one"]), "OK\n");
    ok(n, &["put", "a/2", "two"]);
    ok(n, &["put", "b/1", "three"]);
    assert_eq!(ok(n, &["get", "a/1"]), "a/1\none\n");
    assert_eq!(
        ok(n, &["get", "a/", "--prefix", "--keys-only"]),
        "a/1\na/2\n"
    );
    assert_eq!(ok(n, &["get", "a/", "--prefix", "--count-only"]), "2\n");
    assert_eq!(
        ok(
            n,
            &[
                "get",
                "a/",
                "--range-end",
                "b/2",
                "--limit",
                "2",
                "--keys-only"
            ]
        ),
        "a/1\na/2\n"
    );
    assert_eq!(
        ok(n, &["get", "a/2", "--consistency", "stale"]),
        "a/2\ntwo\n"
    );
    assert_eq!(ok(n, &["get", "missing"]), "");
    let json: serde_json::Value =
        serde_json::from_str(&ok(n, &["get", "b/1", "--output", "json"])).unwrap();
    assert_eq!(json["kvs"][0]["value"], "three");
    assert_eq!(json["kvs"][0]["version"], 1);
    assert_eq!(ok(n, &["put", "a/1", "uno", "--prev-kv"]), "OK\na/1\none\n");
    ok(n, &["put", "short", "lived", "--ttl", "1h"]);
    let json: serde_json::Value =
        serde_json::from_str(&ok(n, &["get", "short", "--output", "json"])).unwrap();
    assert!(json["kvs"][0]["expires_at_ms"].as_u64().is_some());

    assert_eq!(
        ok(
            n,
            &[
                "txn",
                "--compare",
                "value(a/1) = uno",
                "--success",
                "put a/1 eins",
                "--success",
                "get a/1",
                "--failure",
                "get a/2"
            ]
        ),
        "SUCCESS\na/1\neins\n"
    );
    let file = root.path().join("txn.json");
    std::fs::write(
        &file,
        r#"{"compare": ["version(a/1) > 5"], "success": ["del a/1"], "failure": ["get a/2"]}"#,
    )
    .unwrap();
    assert_eq!(
        ok(n, &["txn", "--file", file.to_str().unwrap()]),
        "FAILURE\na/2\ntwo\n"
    );

    let granted = ok(n, &["lease", "grant", "60s"]);
    assert!(granted.ends_with("granted with TTL(1m)\n"), "{granted}");
    let id = granted.split(' ').nth(1).unwrap().to_string();
    ok(n, &["put", "leased", "x", "--lease", &id]);
    assert_eq!(
        ok(n, &["lease", "keepalive", &id]),
        format!("lease {id} kept alive with TTL(1m)\n")
    );
    let list = ok(n, &["lease", "list"]);
    assert!(
        list.starts_with("found 1 leases\n") && list.contains(&format!("\n{id} ttl=1m")),
        "{list}"
    );
    assert_eq!(
        ok(n, &["lease", "revoke", &id]),
        format!("lease {id} revoked (1 keys deleted)\n")
    );
    assert_eq!(ok(n, &["get", "leased"]), "");
    fails(n, &["lease", "revoke", &id], "lease");

    assert_eq!(ok(n, &["del", "a/", "--prefix"]), "2\n");
    assert_eq!(ok(n, &["del", "b/1"]), "1\n");
    assert_eq!(ok(n, &["del", "b/1"]), "0\n");

    let revision_of = |stdout: String| -> u64 {
        let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        json["revision"].as_u64().expect("a revision")
    };
    let first = revision_of(ok(n, &["put", "h", "v1", "--output", "json"]));
    let second = revision_of(ok(n, &["put", "h", "v2", "--output", "json"]));
    let (first, second) = (first.to_string(), second.to_string());
    assert_eq!(ok(n, &["get", "h", "--rev", &first]), "h\nv1\n");
    assert_eq!(
        ok(n, &["get", "h", "--prefix", "--rev", &second]),
        "h\nv2\n"
    );
    // `aspen watch` replays from a revision and prints each event as it comes.
    let mut watch = Command::new(env!("CARGO_BIN_EXE_aspen"))
        .args(["watch", "h", "--rev", &first, "--prev-kv"])
        .env("ASPEN_NODE", n)
        .env("ASPEN_KEY", KEY.get().unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn aspen watch");
    let watch_out = watch.stdout.take().unwrap();
    // Terminated and reaped on drop, like the cluster.
    let _watch = LocalCluster(watch);
    let mut watched = BufReader::new(watch_out).lines();
    let mut line = || watched.next().expect("a line").expect("read");
    assert_eq!(
        [line(), line(), line(), line(), line()],
        [
            format!("PUT h (rev {first})"),
            "v1".to_string(),
            format!("PUT h (rev {second})"),
            "v2".to_string(),
            "previous: v1".to_string(),
        ]
    );
    // As JSON lines, puts only.
    let mut watch_json = Command::new(env!("CARGO_BIN_EXE_aspen"))
        .args([
            "--output", "json", "watch", "h", "--rev", &second, "--filter", "put",
        ])
        .env("ASPEN_NODE", n)
        .env("ASPEN_KEY", KEY.get().unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn aspen watch --output json");
    let json_out = watch_json.stdout.take().unwrap();
    let _watch_json = LocalCluster(watch_json);
    let event: serde_json::Value = serde_json::from_str(
        &BufReader::new(json_out)
            .lines()
            .next()
            .expect("a line")
            .expect("read"),
    )
    .unwrap();
    assert_eq!(
        (&event["kind"], &event["key"], &event["kv"]["value"]),
        (&"PUT".into(), &"h".into(), &"v2".into()),
        "{event}"
    );
    assert_eq!(event["revision"].to_string(), second);
    assert_eq!(
        ok(n, &["compact", &second]),
        format!("compacted the history to revision {second}\n")
    );
    fails(
        n,
        &["get", "h", "--rev", &first],
        &format!("revision {first} is compacted: the oldest revision kept is {second}"),
    );
    fails(
        n,
        &["get", "h", "--rev", "999999999"],
        "revision 999999999 is a future revision",
    );
    assert_eq!(ok(n, &["get", "h", "--rev", &second]), "h\nv2\n");
    assert_eq!(ok(n, &["del", "h"]), "1\n");

    let status = ok(n, &["cluster", "status"]);
    assert!(
        status.contains("leader: ") && status.contains("members: 3"),
        "{status}"
    );
    let hashkv = ok(n, &["cluster", "hashkv"]);
    assert_eq!(
        hashkv.lines().filter(|l| l.ends_with("  ok")).count(),
        3,
        "{hashkv}"
    );
    let members: serde_json::Value =
        serde_json::from_str(&ok(n, &["cluster", "members", "--output", "json"])).unwrap();
    let members = members.as_array().unwrap();
    assert_eq!(members.len(), 3);
    let leader: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("leader: "))
        .unwrap()
        .parse()
        .unwrap();
    let other = members
        .iter()
        .find(|m| m["id"].as_u64() != Some(leader))
        .unwrap();
    // Membership as the leader sees it (a removed node keeps its last view).
    let leader_address = members
        .iter()
        .find(|m| m["id"].as_u64() == Some(leader))
        .unwrap()["address"]
        .as_str()
        .unwrap()
        .to_string();
    let l = leader_address.as_str();
    let (other_id, other_address) = (
        other["id"].as_u64().unwrap().to_string(),
        other["address"].as_str().unwrap().to_string(),
    );
    // SQL on the leader and on a follower: a linearizable query there is forwarded to the
    // leader; table (default), JSON and CSV output; errors are one line with exit 1.
    for (key, value) in [("sql/1", "one"), ("sql/2", "two"), ("sql/3", "three")] {
        ok(n, &["put", key, value]);
    }
    let query = "SELECT key, value, version FROM kv WHERE key LIKE 'sql/%' ORDER BY key";
    let table = ok(l, &["sql", query]);
    assert_eq!(
        table,
        "| key   | value | version |\n\
         |-------|-------|---------|\n\
         | sql/1 | one   | 1       |\n\
         | sql/2 | two   | 1       |\n\
         | sql/3 | three | 1       |\n\
         (3 rows)\n"
    );
    assert_eq!(ok(&other_address, &["sql", query]), table);
    assert_eq!(ok(l, &["sql", query, "--consistency", "stale"]), table);
    let json: serde_json::Value = serde_json::from_str(&ok(
        &other_address,
        &[
            "sql",
            "SELECT split_part(key, '/', 1) AS p, COUNT(*) AS n FROM kv GROUP BY p ORDER BY p",
            "--output",
            "json",
        ],
    ))
    .unwrap();
    assert_eq!(
        json["rows"],
        serde_json::json!([{"p": "short", "n": 1}, {"p": "sql", "n": 3}])
    );
    assert_eq!(
        ok(
            n,
            &[
                "sql",
                "SELECT key, value FROM kv WHERE key IN ('sql/1', 'sql/3') ORDER BY key",
                "--output",
                "csv"
            ]
        ),
        "key,value\nsql/1,one\nsql/3,three\n"
    );
    fails(n, &["sql", "SELECT nope FROM kv"], "sql: ");
    fails(n, &["sql", "DROP TABLE kv"], "only queries are allowed");
    let (code, _, stderr) = aspen(n, &["get", "x", "--output", "csv"]);
    assert_eq!(
        (code, stderr.trim()),
        (2, "Error: --output csv is only for `aspen sql`")
    );

    // `aspen bench`: every workload runs its exact operation count without errors, spread
    // over the nodes, and reports throughput, latency percentiles, and each node process's
    // CPU per 1,000 operations and resident memory (JSON and text); with `--protocol etcd`
    // the key-value workloads run the same through the nodes' etcd API.
    for (workload, extra) in [
        ("put", &[][..]),
        ("get", &[][..]),
        ("txn-cas", &[][..]),
        (
            "mixed",
            &["--read-percent", "30", "--consistency", "stale"][..],
        ),
        (
            "sql",
            &["--query", "SELECT count(*) FROM kv WHERE key LIKE 'b%'"][..],
        ),
        ("watch", &["--watchers", "3"][..]),
    ] {
        let mut args = vec!["--output", "json", "bench", workload];
        args.extend(["--total", "40", "--clients", "4", "--connections", "2"]);
        args.extend(["--keyspace", "20", "--key-size", "8", "--value-size", "32"]);
        args.extend(extra);
        let report: serde_json::Value = serde_json::from_str(&ok(n, &args)).unwrap();
        assert_eq!(report["workload"], workload, "{report}");
        assert_eq!(
            (report["ops"].as_u64(), report["errors"].as_u64()),
            (Some(40), Some(0))
        );
        assert_eq!(report["nodes"], 3);
        let latency = &report["latency_ms"];
        let p = |q: &str| latency[q].as_f64().unwrap();
        assert!(
            0.0 < p("p50") && p("p50") <= p("p90") && p("p99") <= p("max"),
            "{report}"
        );
        assert!(report["throughput_ops_s"].as_f64().unwrap() > 0.0);
        let cpu = report["cpu_s_per_1000_ops"].as_object().unwrap();
        let rss = report["rss_mb"].as_object().unwrap();
        assert_eq!((cpu.len(), rss.len()), (3, 3), "{report}");
        assert!(rss.values().all(|mb| mb.as_u64().unwrap() > 0), "{report}");
        match workload {
            // put wrote keys b0000000..b0000019 (40 puts over 20 keys).
            "get" => assert_eq!(report["found"], 40),
            "txn-cas" => assert_eq!(
                report["swapped"].as_u64().unwrap() + report["conflicts"].as_u64().unwrap(),
                40
            ),
            // Every watcher got every put's event.
            "watch" => {
                assert_eq!(report["events"], 3 * 40, "{report}");
                assert!(report["event_latency_ms"]["p50"].as_f64().unwrap() > 0.0);
            }
            _ => {}
        }
    }
    // `aspen bench --protocol etcd`: the same loop through every node's etcd API.
    let endpoints = printed
        .iter()
        .find_map(|line| {
            line.split_whitespace()
                .find_map(|word| word.strip_prefix("ETCDCTL_ENDPOINTS="))
        })
        .expect("the cluster printed its etcd endpoints")
        .to_string();
    for workload in ["put", "get", "txn-cas", "mixed"] {
        let mut args = vec!["--output", "json", "bench", workload, "--protocol", "etcd"];
        args.extend(["--endpoints", &endpoints, "--total", "40", "--clients", "4"]);
        args.extend(["--connections", "2", "--keyspace", "20", "--key-size", "8"]);
        let report: serde_json::Value = serde_json::from_str(&ok(n, &args)).unwrap();
        assert_eq!(report["protocol"], "etcd", "{report}");
        assert_eq!(
            (report["ops"].as_u64(), report["errors"].as_u64()),
            (Some(40), Some(0)),
            "{report}"
        );
        assert_eq!(report["nodes"], 3, "{report}");
        if workload == "get" {
            assert_eq!(report["found"], 40, "{report}");
        }
    }
    fails(
        n,
        &[
            "bench",
            "sql",
            "--protocol",
            "etcd",
            "--endpoints",
            &endpoints,
        ],
        "the sql workload speaks Aspen's protocol only",
    );
    fails(
        n,
        &["bench", "put", "--protocol", "etcd"],
        "--protocol etcd needs --endpoints",
    );
    let text = ok(n, &["bench", "put", "--total", "5", "--key-size", "8"]);
    assert!(text.contains("operations   5 ok, 0 failed"), "{text}");
    assert!(text.contains("latency ms   p50 "), "{text}");
    assert!(text.contains("cpu/1000 ops node "), "{text}");
    fails(
        n,
        &["bench", "put", "--clients", "0"],
        "--clients must be 1 to",
    );
    fails(
        n,
        &["bench", "put", "--key-size", "2"],
        "--key-size must be 5 to",
    );

    assert_eq!(ok(n, &["cluster", "remove", &other_id]), "OK\n");
    assert!(ok(l, &["cluster", "status"]).contains("members: 2"));
    assert_eq!(
        ok(n, &["cluster", "add-learner", &other_id, &other_address]),
        "OK\n"
    );
    assert!(
        ok(n, &["cluster", "members"]).contains(&format!("{other_id} {other_address} learner"))
    );
    assert_eq!(ok(n, &["cluster", "promote", &other_id]), "OK\n");
    assert!(ok(l, &["cluster", "members"]).contains(&format!("{other_id} {other_address} voter")));

    // Auth: the printed key is root, and so is the user's own key (no ASPEN_KEY: HOME's); a
    // second client gets read on `a/` through a role.
    assert!(ok(n, &["auth", "whoami"]).contains("roles: root"));
    let own = Command::new(env!("CARGO_BIN_EXE_aspen"))
        .args(["auth", "whoami"])
        .env("ASPEN_NODE", n)
        .env("HOME", root.path())
        .env_remove("ASPEN_KEY")
        .output()
        .unwrap();
    let own = String::from_utf8_lossy(&own.stdout).into_owned();
    assert!(own.contains("roles: root"), "{own}");
    assert!(root.path().join(".config/aspen/client.key").is_file());
    let guest_key = root.path().join("guest.key");
    let guest_key = guest_key.to_str().unwrap();
    let as_guest = |args: &[&str]| aspen_as(guest_key, n, args);
    let (code, who, stderr) = as_guest(&["auth", "whoami"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(who.contains("not known to the cluster"), "{who}");
    let mode = std::fs::metadata(guest_key).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    let guest = who.split(' ').next().unwrap().to_string();
    for args in [
        &["auth", "role", "add", "reader"][..],
        &[
            "auth", "role", "grant", "reader", "--prefix", "a/", "--perm", "read",
        ],
        &["auth", "client", "add", &guest, "--role", "reader"],
    ] {
        assert_eq!(ok(n, args), "OK\n", "{args:?}");
    }
    let list = ok(n, &["auth", "list"]);
    assert!(list.contains(&format!("{guest}  reader")), "{list}");
    assert!(list.contains("reader  read on \"a/\""), "{list}");
    ok(n, &["put", "a/auth", "yes"]);
    let (code, got, stderr) = as_guest(&["get", "a/auth"]);
    assert_eq!((code, got.as_str()), (0, "a/auth\nyes\n"), "{stderr}");
    let (code, _, stderr) = as_guest(&["put", "a/auth", "x"]);
    assert_eq!(code, 1);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("permission denied") && stderr.contains("no readwrite permission"),
        "{stderr}"
    );
    assert_eq!(ok(n, &["get", "a/auth"]), "a/auth\nyes\n");
    assert_eq!(
        ok(n, &["auth", "role", "revoke", "reader", "--prefix", "a/"]),
        "OK\n"
    );
    let (code, _, stderr) = as_guest(&["get", "a/auth"]);
    assert!(
        code == 1 && stderr.contains("no read permission"),
        "{stderr}"
    );
    for args in [
        &["auth", "client", "revoke", &guest, "--role", "reader"][..],
        &["auth", "role", "remove", "reader"],
        &["auth", "client", "remove", &guest],
    ] {
        assert_eq!(ok(n, args), "OK\n", "{args:?}");
    }
    assert!(as_guest(&["auth", "whoami"]).1.contains("not known"));
    fails(
        n,
        &["auth", "client", "add", "nobody"],
        "client id \"nobody\"",
    );

    fails(n, &["put", "", "v"], "key");
    fails("not-an-address", &["get", "a"], "bad node address");
    fails(n, &["txn", "--compare", "size(a) = 1"], "unknown field");
    fails(
        n,
        &["cluster", "init", "--member", "1=nowhere"],
        "bad node address",
    );

    // `cluster init` forms a new (here single-member) cluster from a waiting node.
    let lone = NodeProcess::start(9, &root.path().join("lone"), "none");
    let lone_address = lone.address().await.to_string();
    let member = format!("9={lone_address}");
    assert_eq!(
        ok(&lone_address, &["cluster", "init", "--member", &member]),
        "OK\n"
    );
    assert_eq!(ok(&lone_address, &["put", "solo", "yes"]), "OK\n");
    drop(lone);

    let mut cluster = cluster;
    terminate(&cluster.0);
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = cluster.0.wait().unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(
        rest.last().map(String::as_str),
        Some("aspen local cluster stopped")
    );
}
