//! `aspen-node cluster`: a local cluster in one command. Starts N `aspen-node` processes on
//! loopback, each with its own data dir and config under `--data-dir` (kept, so a second run
//! restarts the same cluster on the same ports and keys), forms the cluster, prints each
//! node's address and the `aspen` lines to use (`ASPEN_NODE`, and `ASPEN_KEY`: the key of
//! the cluster's first root client, `DIR/client.key`; the user's own client key is root
//! too), and stops every node it started on Ctrl-C or
//! SIGTERM. The nodes die with it (parent-death signal) even if it is killed.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Duration;

use crate::api::NodeId;
use crate::client::Client;
use crate::net::endpoint::{ADDR_FILE, NodeAddress, read_addr_file};

/// How long nodes get to start, elect a leader, and stop.
const PHASE_TIMEOUT: Duration = Duration::from_secs(30);

struct Member {
    id: NodeId,
    dir: PathBuf,
    child: Child,
}

/// Runs the cluster until a signal; the exit code is 0 after a clean stop.
pub async fn run(nodes: u64, data_dir: &Path, base_port: Option<u16>) -> ExitCode {
    let mut members = Vec::new();
    let result = start(nodes, data_dir, base_port, &mut members).await;
    let code = match result {
        Ok(()) => {
            wait_for_signal(&mut members).await;
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("aspen-node cluster: {error}");
            ExitCode::FAILURE
        }
    };
    stop(&mut members).await;
    code
}

async fn start(
    nodes: u64,
    data_dir: &Path,
    base_port: Option<u16>,
    members: &mut Vec<Member>,
) -> Result<(), String> {
    if nodes == 0 {
        return Err("--nodes must be at least 1".into());
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find aspen-node: {e}"))?;
    // The cluster's first root client: the key the printed ASPEN_KEY line names.
    crate::files::create_private_dir(data_dir)
        .map_err(|e| format!("{}: {e}", data_dir.display()))?;
    let key_path = data_dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", data_dir.display()))?
        .join(crate::node::CLIENT_KEY_FILE);
    let key = crate::client::load_key(&key_path).map_err(|e| e.to_string())?;
    // The user's own key (what `aspen` uses without ASPEN_KEY) is root too: whoever starts
    // a local cluster owns it.
    let mut roots = vec![key.public()];
    let own = crate::client::default_key_path().and_then(|path| crate::client::load_key(&path));
    match own {
        Ok(own) if own.public() != key.public() => roots.push(own.public()),
        Ok(_) => {}
        Err(error) => eprintln!(
            "aspen-node cluster: only {} is root: {error}",
            key_path.display()
        ),
    }
    for id in 1..=nodes {
        let dir = data_dir.join(format!("node{id}"));
        crate::files::create_private_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let dir = dir
            .canonicalize()
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let config = dir.join("node.toml");
        if !config.exists() {
            write_config(&config, id, &dir, base_port, &roots)?;
        } else {
            add_auth_section(&config, &roots)?;
        }
        add_etcd_section(&config, &key_path)?;
        let _ = std::fs::remove_file(dir.join(crate::node::ETCD_ADDR_FILE));
        let _ = std::fs::remove_file(dir.join(ADDR_FILE));
        let log = crate::files::private_file()
            .create(true)
            .append(true)
            .open(dir.join("node.log"))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut command = Command::new(&exe);
        command
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log);
        // SAFETY: the closure only makes one async-signal-safe system call (prctl).
        unsafe {
            command.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::TERM,
                ))
                .map_err(std::io::Error::from)
            });
        }
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start node {id}: {e}"))?;
        members.push(Member { id, dir, child });
    }

    let mut addresses = BTreeMap::new();
    for member in members.iter_mut() {
        addresses.insert(member.id, wait_for_address(member).await?);
    }
    let list: Vec<NodeAddress> = addresses.values().copied().collect();
    let client = Client::connect_with_key(key, &list)
        .await
        .map_err(|e| e.to_string())?;
    let status = client
        .status_of(&addresses[&1])
        .await
        .map_err(|e| format!("node 1: {e}"))?;
    if status.members.is_empty() {
        client
            .cluster_init(&addresses)
            .await
            .map_err(|e| format!("forming the cluster: {e}"))?;
    }
    let deadline = tokio::time::Instant::now() + PHASE_TIMEOUT;
    let leader = loop {
        if let Some(leader) = client.status().await.ok().and_then(|s| s.leader) {
            break leader;
        }
        if tokio::time::Instant::now() > deadline {
            return Err("no leader was elected; see the node.log files".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    println!("aspen local cluster: {nodes} nodes, leader is node {leader}");
    for member in members.iter() {
        println!(
            "  node {}  {}  data {}",
            member.id,
            addresses[&member.id],
            member.dir.display()
        );
    }
    let all: Vec<String> = list.iter().map(|a| a.to_string()).collect();
    println!("use it with:");
    println!("  export ASPEN_NODE={}", all.join(","));
    println!("  export ASPEN_KEY={}", key_path.display());
    println!("  (without ASPEN_KEY, aspen uses your ~/.config/aspen/client.key: root here too)");
    println!("  aspen put hello world && aspen get hello");
    let etcd: Vec<String> = members
        .iter()
        .filter_map(|m| std::fs::read_to_string(m.dir.join(crate::node::ETCD_ADDR_FILE)).ok())
        .map(|a| a.trim().to_string())
        .collect();
    if !etcd.is_empty() {
        println!("or with etcd's clients (acting as the root client above):");
        println!(
            "  export ETCDCTL_API=3 ETCDCTL_ENDPOINTS={}",
            etcd.join(",")
        );
        println!("  etcdctl put hello world && etcdctl get hello");
    }
    println!("Ctrl-C stops every node.");
    Ok(())
}

fn write_config(
    path: &Path,
    id: NodeId,
    dir: &Path,
    base_port: Option<u16>,
    roots: &[crate::api::ClientId],
) -> Result<(), String> {
    let (net, http) = match base_port {
        Some(base) => {
            let net = u64::from(base) + 2 * (id - 1);
            let http = net + 1;
            if http > u64::from(u16::MAX) {
                return Err(format!(
                    "--base-port {base} leaves no port for node {id} (it needs {net} and {http})"
                ));
            }
            (net as u16, http as u16)
        }
        None => (free_port(true)?, free_port(false)?),
    };
    let text = format!(
        "# Written by `aspen-node cluster`; edit freely, it is kept across runs.\n\
         [node]\nid = {id}\ndata_dir = {dir:?}\n\n\
         [net]\naddress = \"127.0.0.1:{net}\"\n\n\
         [http]\naddress = \"127.0.0.1:{http}\"\n\n\
         [raft]\nbootstrap = \"none\"\n\n\
         [storage]\ncache_bytes = 33554432\n\n\
         {auth}",
        auth = auth_section(roots),
        dir = dir.display().to_string(),
    );
    crate::files::private_file()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .and_then(|mut file| std::io::Write::write_all(&mut file, text.as_bytes()))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// A config written before clients were authenticated gets the `[auth]` section, so its
/// already formed cluster gets a root client.
fn add_auth_section(path: &Path, roots: &[crate::api::ClientId]) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if text.lines().any(|line| line.trim() == "[auth]") {
        return Ok(());
    }
    let section = format!("\n{}", auth_section(roots));
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut file| std::io::Write::write_all(&mut file, section.as_bytes()))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// A config without an `[etcd]` section gets one: the etcd API on a free loopback port (kept
/// across runs), acting as the cluster's first root client.
fn add_etcd_section(path: &Path, key: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if text.lines().any(|line| line.trim() == "[etcd]") {
        return Ok(());
    }
    let section = format!(
        "\n[etcd]\naddress = \"127.0.0.1:{}\"\nclient_key = {:?}\n",
        free_port(false)?,
        key.display().to_string()
    );
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut file| std::io::Write::write_all(&mut file, section.as_bytes()))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The `[auth]` section naming `roots` as root clients.
fn auth_section(roots: &[crate::api::ClientId]) -> String {
    let roots: Vec<String> = roots.iter().map(|id| format!("\"{id}\"")).collect();
    format!("[auth]\nroot_clients = [{}]\n", roots.join(", "))
}

/// A loopback port free right now (UDP for the QUIC endpoint, TCP for HTTP).
fn free_port(udp: bool) -> Result<u16, String> {
    let port = if udp {
        std::net::UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr())
    } else {
        std::net::TcpListener::bind("127.0.0.1:0").and_then(|s| s.local_addr())
    };
    port.map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

async fn wait_for_address(member: &mut Member) -> Result<NodeAddress, String> {
    let deadline = tokio::time::Instant::now() + PHASE_TIMEOUT;
    loop {
        if let Ok(address) = read_addr_file(&member.dir) {
            return Ok(address);
        }
        if let Ok(Some(status)) = member.child.try_wait() {
            return Err(format!(
                "node {} exited ({status}); see {}",
                member.id,
                member.dir.join("node.log").display()
            ));
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("node {} did not start in time", member.id));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_for_signal(members: &mut [Member]) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(error) => {
            eprintln!("aspen-node cluster: cannot watch SIGTERM: {error}");
            return;
        }
    };
    let mut reported = std::collections::BTreeSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            _ = term.recv() => return,
            _ = tick.tick() => {
                for member in members.iter_mut() {
                    if let Ok(Some(status)) = member.child.try_wait()
                        && reported.insert(member.id)
                    {
                        eprintln!(
                            "aspen-node cluster: node {} exited ({status}); see {}",
                            member.id,
                            member.dir.join("node.log").display()
                        );
                    }
                }
            }
        }
    }
}

/// SIGTERM to every node, then waits for each (SIGKILL after the timeout).
async fn stop(members: &mut [Member]) {
    for member in members.iter() {
        if let Some(pid) = rustix::process::Pid::from_raw(member.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    }
    let deadline = tokio::time::Instant::now() + PHASE_TIMEOUT;
    for member in members.iter_mut() {
        loop {
            match member.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if tokio::time::Instant::now() > deadline => {
                    let _ = member.child.kill();
                    let _ = member.child.wait();
                    break;
                }
                Ok(None) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
    // Whoever started us may have closed our stdout already.
    let _ = writeln!(std::io::stdout(), "aspen local cluster stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves a node config written before clients were authenticated gets one `[auth]`
    // section naming the roots (a second run adds none), and that the result loads.
    #[test]
    fn an_old_config_gets_its_auth_section_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, "[node]\nid = 2\n[raft]\nbootstrap = \"none\"\n").unwrap();
        let root = iroh::SecretKey::from_bytes(&[3; 32]).public();
        add_auth_section(&path, &[root]).unwrap();
        add_auth_section(&path, &[root]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.matches("[auth]").count(), 1, "{text}");
        let config = crate::config::NodeConfig::load_with_env(&path, Vec::new()).unwrap();
        assert_eq!(config.auth.roots(), vec![root]);
    }
}
