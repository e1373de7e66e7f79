//! Who may do what, on the node: each client request is checked against the auth state
//! this node applied ([`crate::api::auth`] holds the rules) before it runs.

use std::sync::Arc;

use crate::api::auth::{Denied, Need, single_key};
use crate::api::*;
use crate::limits::SCAN_ENTRIES_MAX;
use crate::net::service::Failure;
use crate::node::NodeCore;
use crate::node::client::storage_error;
use crate::storage::Store;

/// `Denied` as the client sees it.
fn denied(denied: Denied) -> Failure {
    Failure::Error(ClientError::Denied(denied.to_string()))
}

impl NodeCore {
    /// Checks what `client` may do against the auth state this node applied: the state
    /// (`None` with `auth.enabled = false`), or the refusal naming what was missing. A node
    /// forwarding a request checks it, and the leader checks it again.
    pub(super) async fn authorize(
        &self,
        client: ClientId,
        op: &ClientOp,
    ) -> Result<Option<Arc<AuthState>>, Failure> {
        if !self.auth_enabled {
            return Ok(None);
        }
        let auth = self.auth_state()?;
        // Root may do everything (and being root means the cluster has one).
        if auth.is_root(&client) {
            return Ok(Some(auth));
        }
        let need = op.need();
        if !auth.has_root() && need != Need::Nothing {
            return Err(ClientError::NoRootYet.into());
        }
        auth.check(&client, &need).map_err(denied)?;
        // Revoking a lease deletes its keys: it needs readwrite on every one.
        if let ClientOp::Write(WriteOp::LeaseRevoke { id }) = op {
            let store = self
                .store
                .clone()
                .ok_or_else(|| ClientError::Unavailable("storage is not open".into()))?;
            let id = *id;
            let keys = tokio::task::spawn_blocking(move || {
                store
                    .read(crate::clock::now_ms())?
                    .lease_keys(id, SCAN_ENTRIES_MAX + 1)
            })
            .await
            .map_err(|e| ClientError::Storage(format!("read task: {e}")))?
            .map_err(storage_error)?;
            if keys.len() > SCAN_ENTRIES_MAX {
                return Err(denied(Denied(format!(
                    "lease {id} holds more than {SCAN_ENTRIES_MAX} keys: only a root client revokes it"
                ))));
            }
            let need = Need::Keys(
                keys.iter()
                    .map(|key| (single_key(key), Perm::ReadWrite))
                    .collect(),
            );
            auth.check(&client, &need).map_err(denied)?;
        }
        Ok(Some(auth))
    }

    /// What a running watch asks before each frame: whether `client` may still do `op`
    /// against the auth state as this node applies it now (`None`: auth is off).
    pub(super) fn still_allowed(
        &self,
        client: ClientId,
        op: &ClientOp,
    ) -> Option<crate::node::watcher::StillAllowed> {
        if !self.auth_enabled {
            return None;
        }
        let store = self.store.clone();
        let need = op.need();
        Some(Box::new(move || {
            let auth = applied_auth(store.as_ref())?;
            if auth.is_root(&client) {
                return Ok(());
            }
            auth.check(&client, &need)
                .map_err(|denied| ClientError::Denied(denied.to_string()))
        }))
    }

    /// The auth state this node applied last.
    pub(super) fn auth_state(&self) -> Result<Arc<AuthState>, Failure> {
        Ok(applied_auth(self.store.as_ref())?)
    }
}

/// The auth state `store` applied last.
fn applied_auth(store: Option<&Arc<Store>>) -> Result<Arc<AuthState>, ClientError> {
    let store = store.ok_or_else(|| ClientError::Unavailable("storage is not open".into()))?;
    store.auth().map_err(storage_error)
}
