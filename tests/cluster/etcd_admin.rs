//! etcd's administration calls against Aspen's etcd API on a 3-node cluster of real
//! processes: maintenance (snapshot, alarms, defragment, move-leader) and auth (roles, users,
//! permissions mapped onto Aspen's), through `etcdctl` 3.4 and the Rust `etcd-client`.

use aspen::client::Client as AspenClient;

use crate::etcd::etcdctl;
use crate::util::{etcd_addresses, start_process_cluster};

// Proves etcdctl's snapshot save writes a file etcdctl accepts (etcd's SHA-256 form) that
// `aspen-node restore` turns into a data directory holding every key; alarm list is empty on
// a healthy cluster; defrag works on a follower and is refused on the leader, saying why;
// move-leader to the leader succeeds as etcd's, to a follower is refused naming openraft's
// limit and to a non-member with etcd's error; etcd-client's snapshot stream has etcd's
// framing too, and its member list, status (with the member's database size), alarm and hash
// calls agree; raising an alarm by hand and MemberUpdate are refused saying why, and
// disarming an alarm that is not raised answers none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_snapshot_alarm_defrag_and_move_leader() {
    let root = tempfile::tempdir().unwrap();
    let (nodes, _) = start_process_cluster(root.path(), 1..=3, &[]).await;
    let endpoints: Vec<String> = etcd_addresses(&nodes).await.into_values().collect();
    let all = endpoints.join(",");
    let run = |endpoints: &str, args: &[&str]| {
        let run = etcdctl(endpoints, args, None);
        assert!(run.ok, "etcdctl {args:?}: {}{}", run.stdout, run.stderr);
        run.stdout
    };
    for i in 0..20 {
        run(&all, &["put", &format!("k{i:02}"), &format!("v{i}")]);
    }

    // The leader, from `endpoint status`: endpoint, id (hex), version, db size, is leader, ...
    let status = run(&all, &["endpoint", "status"]);
    let (leader_endpoint, leader_id) = status
        .lines()
        .map(|line| line.split(", ").collect::<Vec<_>>())
        .find(|fields| fields[4] == "true")
        .map(|fields| (fields[0].to_string(), fields[1].to_string()))
        .expect("a leader");
    let follower = endpoints
        .iter()
        .find(|endpoint| **endpoint != leader_endpoint)
        .unwrap();

    let file = root.path().join("snapshot.db");
    let saved = run(follower, &["snapshot", "save", file.to_str().unwrap()]);
    assert_eq!(saved, format!("Snapshot saved at {}\n", file.display()));
    let restored = aspen::storage::restore_backup(
        &file,
        &root.path().join("restored"),
        1 << 20,
        aspen::clock::now_ms(),
    )
    .expect("aspen-node restore reads etcdctl's snapshot file");
    assert_eq!(restored.keys, 20);

    assert_eq!(run(&all, &["alarm", "list"]), "");
    assert_eq!(
        run(follower, &["defrag"]),
        format!("Finished defragmenting etcd member[{follower}]\n")
    );
    let refused = etcdctl(&leader_endpoint, &["defrag"], None);
    assert!(!refused.ok);
    assert!(
        refused.stderr.contains("is the leader of 3 voters"),
        "{}",
        refused.stderr
    );

    assert_eq!(
        run(&all, &["move-leader", &leader_id]),
        format!("Leadership transferred from {leader_id} to {leader_id}\n")
    );
    let other = if leader_id == "1" { "2" } else { "1" };
    let stranger = etcdctl(&all, &["move-leader", "99"], None);
    assert!(
        stranger
            .stderr
            .contains("etcdserver: bad leader transferee"),
        "{}",
        stranger.stderr
    );
    let refused = etcdctl(&all, &["move-leader", other], None);
    assert!(!refused.ok);
    assert!(
        refused
            .stderr
            .contains("openraft 0.9 has no leader transfer"),
        "{}",
        refused.stderr
    );

    // etcd-client's snapshot stream: the blobs end in etcd's form (512-byte multiple, then a
    // SHA-256) and the last message says nothing remains.
    let mut client = etcd_client::Client::connect([follower.as_str()], None)
        .await
        .unwrap();
    let mut stream = client.snapshot().await.unwrap();
    let (mut bytes, mut last_remaining) = (0usize, None);
    while let Some(message) = stream.message().await.unwrap() {
        bytes += message.blob().len();
        last_remaining = Some(message.remaining_bytes());
    }
    assert_eq!(bytes % 512, 32, "{bytes} bytes");
    assert_eq!(last_remaining, Some(0));

    // The same members, leader and alarms through etcd-client.
    let members = client.member_list().await.unwrap();
    let mut ids: Vec<u64> = members.members().iter().map(|m| m.id()).collect();
    ids.sort();
    assert_eq!(ids, [1, 2, 3]);
    let status = client.status().await.unwrap();
    assert_eq!(format!("{:x}", status.leader()), leader_id);
    assert!(!status.is_learner());
    assert!(status.db_size() > 0, "the member's database file size");
    let alarms = client
        .alarm(
            etcd_client::AlarmAction::Get,
            etcd_client::AlarmType::None,
            None,
        )
        .await
        .unwrap();
    assert!(alarms.alarms().is_empty());
    // Hash answers the same key-space hash as HashKV.
    let hash = client.hash().await.unwrap().hash();
    assert_eq!(hash, client.hash_kv(0).await.unwrap().hash());

    use etcd_client::{AlarmAction, AlarmType};
    let raised = client
        .alarm(AlarmAction::Activate, AlarmType::Nospace, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        raised.contains("raised by the nodes themselves"),
        "{raised}"
    );
    let disarmed = client
        .alarm(AlarmAction::Deactivate, AlarmType::Nospace, None)
        .await
        .unwrap();
    assert!(disarmed.alarms().is_empty());
    let update = client
        .member_update(1, ["http://127.0.0.1:1".to_string()])
        .await
        .unwrap_err()
        .to_string();
    assert!(update.contains("remove it and add it back"), "{update}");
}

// Proves etcd's auth calls map onto Aspen's roles: role and user management through etcdctl
// prints what etcd 3.4.23 prints for the same commands (role and user lists aside: Aspen's
// root role is built in, its root clients are users), a user is an Aspen client whose grants
// then hold for its own requests (a put under the granted prefix passes, others are denied,
// and nothing passes once the role is revoked), passwords, logging in and switching auth off
// at runtime are refused saying why, and
// etcd-client's auth calls see the same roles and users.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_auth_maps_onto_aspen_roles() {
    let root = tempfile::tempdir().unwrap();
    let (nodes, addresses) = start_process_cluster(root.path(), 1..=3, &[]).await;
    let endpoint = nodes[&1].etcd_address().await;
    let key = iroh::SecretKey::from_bytes(&[0x17; 32]);
    let user = key.public().to_string();
    let expect = |args: &[&str], printed: &str| {
        let run = etcdctl(&endpoint, args, None);
        // etcdctl logs its retries as JSON lines on stderr; the error is the line after.
        let text = match run.ok {
            true => run.stdout,
            false => run
                .stderr
                .lines()
                .filter(|l| !l.starts_with('{'))
                .map(|l| format!("{l}\n"))
                .collect(),
        };
        assert_eq!(text, printed, "etcdctl {args:?}");
    };
    expect(&["role", "add", "app"], "Role app created\n");
    expect(
        &["role", "add", "app"],
        "Error: etcdserver: role name already exists\n",
    );
    expect(
        &[
            "role",
            "grant-permission",
            "app",
            "readwrite",
            "--prefix",
            "app/",
        ],
        "Role app updated\n",
    );
    expect(
        &[
            "role",
            "grant-permission",
            "app",
            "read",
            "logs",
            "--prefix",
        ],
        "Role app updated\n",
    );
    expect(
        &["role", "get", "app"],
        "Role app\nKV Read:\n\t[app/, app0) (prefix app/)\n\t[logs, logt) (prefix logs)\n\
         KV Write:\n\t[app/, app0) (prefix app/)\n",
    );
    expect(&["role", "list"], "app\nroot\n");
    expect(
        &["user", "add", &user, "--no-password"],
        &format!("User {user} created\n"),
    );
    expect(
        &["user", "add", &user, "--no-password"],
        "Error: etcdserver: user name already exists\n",
    );
    expect(
        &["user", "grant-role", &user, "app"],
        &format!("Role app is granted to user {user}\n"),
    );
    expect(
        &["user", "get", &user],
        &format!("User: {user}\nRoles: app\n"),
    );
    let users = etcdctl(&endpoint, &["user", "list"], None).stdout;
    assert!(users.lines().any(|line| line == user), "{users}");
    assert!(
        users.lines().any(|line| line == aspen::testing::root_id()),
        "{users}"
    );

    // The user is the Aspen client of that key: its grants hold for its requests.
    let nodes_list: Vec<_> = addresses.values().copied().collect();
    let client = AspenClient::connect_with_key(key, &nodes_list)
        .await
        .unwrap();
    client
        .put("app/x", "1")
        .await
        .expect("granted readwrite on app/");
    let denied = client.put("other", "1").await.unwrap_err();
    assert!(denied.to_string().contains("permission"), "{denied}");

    expect(
        &["role", "revoke-permission", "app", "logs", "--prefix"],
        "Permission of range [logs, logt) is revoked from role app\n",
    );
    expect(
        &["role", "revoke-permission", "app", "nothere/", "--prefix"],
        "Error: etcdserver: permission is not granted to the role\n",
    );
    expect(
        &["user", "revoke-role", &user, "app"],
        &format!("Role app is revoked from user {user}\n"),
    );
    expect(
        &["user", "revoke-role", &user, "app"],
        "Error: etcdserver: role is not granted to the user\n",
    );
    expect(&["user", "get", &user], &format!("User: {user}\nRoles:\n"));
    let denied = client.put("app/y", "2").await.unwrap_err();
    assert!(denied.to_string().contains("permission"), "{denied}");
    expect(
        &["user", "delete", &user],
        &format!("User {user} deleted\n"),
    );
    expect(
        &["user", "get", &user],
        "Error: etcdserver: user name not found\n",
    );
    expect(&["role", "delete", "app"], "Role app deleted\n");
    expect(
        &["role", "get", "app"],
        "Error: etcdserver: role name not found\n",
    );

    let password = etcdctl(&endpoint, &["user", "add", &format!("{user}:secret")], None);
    assert!(!password.ok);
    assert!(
        password.stderr.contains("not a password"),
        "{}",
        password.stderr
    );
    expect(&["auth", "enable"], "Authentication Enabled\n");
    // Auth is switched in the config, and there are no passwords to authenticate with.
    let disable = etcdctl(&endpoint, &["auth", "disable"], None);
    assert!(
        !disable.ok && disable.stderr.contains("not at runtime"),
        "{}",
        disable.stderr
    );
    let login = etcdctl(&endpoint, &["--user=root:secret", "get", "k"], None);
    assert!(
        !login.ok && login.stderr.contains("authentication failed"),
        "{}",
        login.stderr
    );

    // etcd-client's auth calls see the same roles and users.
    let mut client = etcd_client::Client::connect([endpoint.as_str()], None)
        .await
        .unwrap();
    client.role_add("ops").await.unwrap();
    let roles = client.role_list().await.unwrap();
    assert_eq!(roles.roles(), ["ops", "root"]);
    let gone = client.user_get(user.as_str()).await.unwrap_err();
    assert!(gone.to_string().contains("user name not found"), "{gone}");
}
