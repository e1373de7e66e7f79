use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aspen::client::Client;
use tokio::sync::Mutex;

use crate::util::{NodeProcess, eventually};

// Proves a single aspen-node process SIGKILLed while a client writes keeps every write it
// acknowledged: after a restart on the same data dir each acknowledged key is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_writes_keeps_every_acknowledged_write() {
    let root = tempfile::tempdir().unwrap();
    let mut node = NodeProcess::start(1, root.path(), "single");
    let address = node.address().await;
    let acked = Arc::new(Mutex::new(Vec::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (acked, count) = (acked.clone(), count.clone());
        tokio::spawn(async move {
            let client = Client::connect(&[address])
                .await
                .unwrap()
                .with_retry_budget(std::time::Duration::from_secs(2));
            for i in 0.. {
                let key = format!("d/{i:06}");
                match client.put(key.as_str(), "v").await {
                    Ok(_) => {
                        acked.lock().await.push(key);
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => break,
                }
            }
        })
    };
    eventually("writes are acknowledged", || {
        std::future::ready(count.load(Ordering::Relaxed) >= 200)
    })
    .await;
    node.kill();
    writer.await.unwrap();

    node.restart();
    let client = Client::connect(&[node.address().await]).await.unwrap();
    let acked = acked.lock().await;
    for key in acked.iter() {
        assert!(
            client.get(key.as_str()).await.unwrap().is_some(),
            "acknowledged key {key} is missing after restart"
        );
    }
}
