//! The node's data directory at start: the node key read (or created), the directory made
//! private, the admin token read (or generated). An in-memory node may run without one; it
//! then gets a fresh key and an admin token it keeps to itself.

use std::path::Path;

use crate::config::NodeConfig;

/// What a node takes from its data directory before it starts.
pub(super) struct Prepared {
    pub(super) key: iroh::SecretKey,
    /// What `/admin/*` needs (`http.admin_token`, else `DATA_DIR/admin.token`).
    pub(super) admin_token: String,
    /// Whom to make root while the cluster has none (`auth.root_clients`, else on a node that
    /// forms a cluster alone the id of `DATA_DIR/client.key`).
    pub(super) roots: Vec<crate::api::ClientId>,
}

/// The root client key a node that forms a cluster alone creates when no root client is
/// configured; the CLI finds it with `--data-dir`.
pub const CLIENT_KEY_FILE: &str = "client.key";

/// The data directory, unless an in-memory node runs without one (validation requires one
/// for file storage).
pub(super) fn data_dir(config: &NodeConfig) -> Option<&Path> {
    let dir = config.node.data_dir.as_path();
    (!dir.as_os_str().is_empty()).then_some(dir)
}

/// Reads the keys first (the node's, and the root client's where it makes one), so a key
/// file others could read is refused rather than repaired by the sweep that then makes the
/// directory private (0700, files 0600; each path it tightens is logged); then the admin
/// token.
pub(super) fn prepare(config: &NodeConfig) -> std::io::Result<Prepared> {
    let node_id = config.node.id;
    let Some(dir) = data_dir(config) else {
        if config.http.admin_token.is_empty() {
            tracing::warn!(
                node_id,
                "http: no data dir and no http.admin_token: the admin API refuses every call"
            );
        }
        let roots = config.auth.roots();
        if roots.is_empty() && config.raft.bootstrap == crate::config::Bootstrap::Single {
            tracing::warn!(
                node_id,
                "auth: no data dir and no auth.root_clients: no client can be made root"
            );
        }
        return Ok(Prepared {
            key: iroh::SecretKey::generate(),
            admin_token: admin_token(config, None)?,
            roots,
        });
    };
    let key = crate::net::endpoint::load_or_create_key(dir)?;
    let mut roots = config.auth.roots();
    if roots.is_empty() && config.raft.bootstrap == crate::config::Bootstrap::Single {
        let client = crate::net::endpoint::load_or_create_key_at(&dir.join(CLIENT_KEY_FILE))?;
        roots.push(client.public());
    }
    for (path, mode) in crate::files::secure_data_dir(dir)? {
        tracing::warn!(
            node_id,
            path = %path.display(),
            "files: had mode {mode:o}; group and other access removed"
        );
    }
    Ok(Prepared {
        key,
        admin_token: admin_token(config, Some(dir))?,
        roots,
    })
}

/// `http.admin_token` when set; else the one in `dir/admin.token` (generated on first
/// start), or without a data dir a generated one that is never written anywhere.
fn admin_token(config: &NodeConfig, dir: Option<&Path>) -> std::io::Result<String> {
    if !config.http.admin_token.is_empty() {
        return Ok(config.http.admin_token.clone());
    }
    match dir {
        Some(dir) => crate::net::admin::load_or_create_token(dir),
        None => crate::net::admin::generate_token(),
    }
}
