//! `aspen bench --protocol etcd`: the bench's operations as etcd v3 gRPC calls (the
//! `etcd-client` crate), so one loop drives Aspen's etcd API and etcd itself alike.

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, KvClient, Txn, TxnOp, TxnOpResponse,
};

/// An etcd call waits at most this long (as the Aspen client's request timeout).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A client of one etcd endpoint (`HOST:PORT`).
pub(super) async fn connect(endpoint: &str) -> Result<KvClient, String> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(CALL_TIMEOUT);
    let client = Client::connect([endpoint], Some(options))
        .await
        .map_err(|e| format!("connecting to the etcd endpoint {endpoint}: {e}"))?;
    Ok(client.kv_client())
}

pub(super) async fn put(kv: &KvClient, key: Vec<u8>, value: Vec<u8>) -> Result<(), String> {
    kv.clone()
        .put(key, value, None)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Whether the key was found; `serializable` reads the member's own state (Aspen's stale).
pub(super) async fn get(kv: &KvClient, key: Vec<u8>, serializable: bool) -> Result<bool, String> {
    let options = serializable.then(|| GetOptions::new().with_serializable());
    let response = kv
        .clone()
        .get(key, options)
        .await
        .map_err(|e| e.to_string())?;
    Ok(!response.kvs().is_empty())
}

/// Puts `value` if the key's mod revision is `revision`, else reads it: whether it swapped,
/// and the key's mod revision afterwards.
pub(super) async fn cas(
    kv: &KvClient,
    key: Vec<u8>,
    revision: u64,
    value: &[u8],
) -> Result<(bool, u64), String> {
    let compare = Compare::mod_revision(key.clone(), CompareOp::Equal, revision as i64);
    let txn = Txn::new()
        .when([compare])
        .and_then([TxnOp::put(key.clone(), value.to_vec(), None)])
        .or_else([TxnOp::get(key, None)]);
    let response = kv.clone().txn(txn).await.map_err(|e| e.to_string())?;
    if response.succeeded() {
        let revision = response.header().map_or(0, |h| h.revision());
        return Ok((true, u64::try_from(revision).unwrap_or(0)));
    }
    let now = response
        .op_responses()
        .into_iter()
        .find_map(|op| match op {
            TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.mod_revision()),
            _ => None,
        })
        .unwrap_or(0);
    Ok((false, u64::try_from(now).unwrap_or(0)))
}
