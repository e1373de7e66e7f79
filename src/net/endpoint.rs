//! A node's iroh endpoint and identity: the secret key kept in `DATA_DIR/node.key`, the
//! address `ENDPOINT_ID@IP:PORT` (`crate::api::NodeAddress`) written to `DATA_DIR/node.addr`,
//! and the offline endpoint
//! (relay, address lookup and port mapping off: nothing leaves the configured interface).

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use iroh::endpoint::presets;
use iroh::{Endpoint, RelayMode, SecretKey};

use crate::files::{create_private_dir, private_file};

/// The node's secret key: 32 raw bytes, mode 0600, created once.
pub const KEY_FILE: &str = "node.key";
/// The node's address as text, rewritten at every start.
pub const ADDR_FILE: &str = "node.addr";

pub use crate::api::{AddressError, NodeAddress};

/// Reads the node's secret key from `dir/node.key`, creating it (mode 0600, in a 0700
/// directory) on first use. A key file that others than its owner may read or write is
/// refused: the key may have leaked, and the operator decides.
pub fn load_or_create_key(dir: &Path) -> std::io::Result<SecretKey> {
    load_or_create_key_at(&dir.join(KEY_FILE))
}

/// As [`load_or_create_key`], for the key file at `path` (a client key: `aspen`'s
/// `~/.config/aspen/client.key`, or a node's `DATA_DIR/client.key`). Its directory is created
/// 0700 when missing.
pub fn load_or_create_key_at(path: &Path) -> std::io::Result<SecretKey> {
    let path = path.to_path_buf();
    match std::fs::read(&path) {
        Ok(bytes) => {
            let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!(
                        "net: {} has mode {mode:o}; a key file must be private to its owner \
                         (if no one else could have read it: chmod 600 {})",
                        path.display(),
                        path.display()
                    ),
                ));
            }
            let bytes: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "net: {} holds {} bytes, a key is 32",
                        path.display(),
                        bytes.len()
                    ),
                )
            })?;
            Ok(SecretKey::from_bytes(&bytes))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                create_private_dir(dir)?;
            }
            // Written whole under a private name, then linked into place: a process creating
            // the same key at the same moment either wins or reads the winner's, never half.
            let key = SecretKey::generate();
            let tmp = path.with_extension(format!(
                "tmp-{}-{:x}",
                std::process::id(),
                u64::from_le_bytes(key.to_bytes()[..8].try_into().expect("8 bytes"))
            ));
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(&key.to_bytes())?;
            file.sync_all()?;
            let linked = std::fs::hard_link(&tmp, &path);
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => Ok(key),
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                    load_or_create_key_at(&path)
                }
                Err(error) => Err(error),
            }
        }
        Err(error) => Err(std::io::Error::new(
            error.kind(),
            format!("net: cannot read {}: {error}", path.display()),
        )),
    }
}

/// The path of the address file in `dir`.
pub fn addr_file(dir: &Path) -> PathBuf {
    dir.join(ADDR_FILE)
}

/// Writes `address` to `dir/node.addr`.
pub fn write_addr_file(dir: &Path, address: &NodeAddress) -> std::io::Result<()> {
    write_text_file(dir, ADDR_FILE, &address.to_string())
}

/// Writes one line to `dir/name` through a temporary file, so readers never see half.
pub fn write_text_file(dir: &Path, name: &str, line: &str) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    private_file()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?
        .write_all(format!("{line}\n").as_bytes())?;
    std::fs::rename(&tmp, dir.join(name))
}

/// Why `node.addr` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AddrFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Address(#[from] AddressError),
}

/// Reads a node's address from `dir/node.addr`.
pub fn read_addr_file(dir: &Path) -> Result<NodeAddress, AddrFileError> {
    let path = addr_file(dir);
    let text = std::fs::read_to_string(&path).map_err(|source| AddrFileError::Read {
        path: path.clone(),
        source,
    })?;
    Ok(text.parse()?)
}

/// Binds an offline endpoint on `address` with `secret`, accepting `alpns`.
pub async fn bind(
    secret: SecretKey,
    address: SocketAddr,
    alpns: Vec<Vec<u8>>,
) -> std::io::Result<Endpoint> {
    let bind_error = |e: &dyn std::fmt::Display| {
        std::io::Error::other(format!("net: cannot bind the endpoint on {address}: {e}"))
    };
    Endpoint::builder(presets::Minimal)
        .secret_key(secret)
        .relay_mode(RelayMode::Disabled)
        .clear_address_lookup()
        .portmapper_config(iroh::endpoint::PortmapperConfig::Disabled)
        .net_report_config(iroh::endpoint::NetReportConfig::minimal())
        .clear_ip_transports()
        .bind_addr(address)
        .map_err(|e| bind_error(&e))?
        .alpns(alpns)
        .transport_config(transport_config())
        .bind()
        .await
        .map_err(|e| bind_error(&e))
}

/// Keep-alives every second and a 5 s idle timeout: a connection to a killed peer is noticed
/// and replaced within seconds rather than after QUIC's default 30 s. A peer may open at most
/// `STREAMS_PER_CONNECTION_MAX` bidirectional streams at once and no unidirectional one (no
/// protocol uses them), and have at most `CONNECTION_WINDOW_BYTES` in flight per connection.
fn transport_config() -> iroh::endpoint::QuicTransportConfig {
    use crate::limits::{CONNECTION_WINDOW_BYTES, STREAMS_PER_CONNECTION_MAX};
    iroh::endpoint::QuicTransportConfig::builder()
        .max_concurrent_bidi_streams(STREAMS_PER_CONNECTION_MAX.into())
        .max_concurrent_uni_streams(0u32.into())
        .receive_window(CONNECTION_WINDOW_BYTES.into())
        .keep_alive_interval(std::time::Duration::from_secs(1))
        .max_idle_timeout(Some(
            std::time::Duration::from_secs(5)
                .try_into()
                .expect("5 s is a valid idle timeout"),
        ))
        .build()
}

/// The address peers use to reach `endpoint`: its id and the socket it is bound to.
pub fn local_address(endpoint: &Endpoint) -> std::io::Result<NodeAddress> {
    let socket = endpoint
        .bound_sockets()
        .into_iter()
        .next()
        .ok_or_else(|| std::io::Error::other("net: the endpoint is bound to no socket"))?;
    Ok(NodeAddress {
        id: endpoint.id(),
        socket,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves an address round-trips through text and that each malformed part is named.
    #[test]
    fn address_text() {
        let id = SecretKey::generate().public();
        let address: NodeAddress = format!("{id}@127.0.0.1:7001").parse().unwrap();
        assert_eq!(address.to_string(), format!("{id}@127.0.0.1:7001"));
        assert!(
            "127.0.0.1:7001"
                .parse::<NodeAddress>()
                .unwrap_err()
                .to_string()
                .contains("no '@'")
        );
        let bad_id = "xyz@127.0.0.1:7001".parse::<NodeAddress>().unwrap_err();
        assert!(bad_id.reason.starts_with("endpoint id"), "{bad_id}");
        let bad_socket = format!("{id}@localhost")
            .parse::<NodeAddress>()
            .unwrap_err();
        assert!(
            bad_socket.reason.starts_with("socket address"),
            "{bad_socket}"
        );
    }

    // Proves processes creating the same key file at once all end with the same key (one
    // wins, the others read it), and no temporary file is left.
    #[test]
    fn racing_creators_agree_on_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("client.key");
        let keys: Vec<_> = (0..8)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || load_or_create_key_at(&path).unwrap().public())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        assert!(keys.iter().all(|k| *k == keys[0]));
        let files: Vec<_> = std::fs::read_dir(dir.path().join("sub")).unwrap().collect();
        assert_eq!(files.len(), 1, "{files:?}");
    }

    // Proves the key is created once with mode 0600 and read back unchanged; a wrong-size
    // file and a file with group or other bits are refused with its path.
    #[test]
    fn key_file() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_key(dir.path()).unwrap();
        let second = load_or_create_key(dir.path()).unwrap();
        assert_eq!(first.public(), second.public());
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(dir.path().join(KEY_FILE), b"short").unwrap();
        let error = load_or_create_key(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains("node.key holds 5 bytes, a key is 32"),
            "{error}"
        );
        // A key others may read is refused, naming the file and its mode.
        std::fs::write(dir.path().join(KEY_FILE), first.to_bytes()).unwrap();
        let path = dir.path().join(KEY_FILE);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let error = load_or_create_key(dir.path()).unwrap_err().to_string();
        assert!(error.contains("node.key has mode 640"), "{error}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            load_or_create_key(dir.path()).unwrap().public(),
            first.public()
        );
    }
}
