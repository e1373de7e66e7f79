//! A real full disk: a node process whose data dir is a small tmpfs, filled up while the node
//! runs, then given its space back.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{NodeProcess, eventually};

/// A tmpfs of `bytes` mounted on `at`, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// `None` where this process may not mount (not root, or no `CAP_SYS_ADMIN`).
    fn mount(at: &Path, bytes: u64) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(at)
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?;
        status.success().then(|| Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The node's `/health` report as JSON.
async fn health(http: &str) -> serde_json::Value {
    reqwest::Client::new()
        .get(format!("http://{http}/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

// Proves a node on a disk that fills up refuses writes with the system's message, says on /health that the disk is
// full (without failing the node), keeps every acknowledged write, and serves writes again
// once space returns: a real tmpfs of 24 MiB holds the data dir of a real node process.
// Skipped, saying so, where the test may not mount a tmpfs (the injected full disk of
// tests/node/faults.rs runs everywhere).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_a_full_disk_recovers_when_space_returns() {
    let root = tempfile::tempdir().unwrap();
    let Some(tmpfs) = Tmpfs::mount(&root.path().join("disk"), 24 << 20) else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let mut node = NodeProcess::start_with(1, &tmpfs.0.join("n1"), "single", &[]);
    let address = node.address().await;
    let http = node.http_address().await;
    let client = aspen::testing::root_client(&[address]).await.unwrap();
    let value = vec![b'v'; 1024];
    for i in 0..20 {
        client
            .put(format!("acked/{i}"), value.clone())
            .await
            .unwrap();
    }

    // Fill the disk.
    let filler = tmpfs.0.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 64 << 10];
    while file.write_all(&chunk).is_ok() {}
    drop(file);
    let big = vec![b'b'; 512 << 10];
    let mut refused = None;
    for i in 0..20 {
        if let Err(error) = client.put(format!("full/{i}"), big.clone()).await {
            refused = Some(error.to_string());
            break;
        }
    }
    let refused = refused.expect("every write succeeded on a full disk");
    assert!(refused.contains("No space left on device"), "{refused}");
    eventually("/health names the full disk", || async {
        let report = health(&http).await;
        report["checks"]["storage"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("No space left on device"))
    })
    .await;
    assert!(health(&http).await["failure"].is_null());

    std::fs::remove_file(&filler).unwrap();
    eventually("a write succeeds once space returns", || async {
        client.put("after", "space returned").await.is_ok()
    })
    .await;
    for i in 0..20 {
        let kv = client.get(format!("acked/{i}")).await.unwrap();
        assert_eq!(kv.map(|kv| kv.value), Some(value.clone()), "acked/{i} lost");
    }
    node.kill();
    drop(tmpfs);
}
