//! The client side of the HTTP admin API (`aspen admin ...`): plain blocking HTTP calls
//! (run them off the async runtime), and the backup download, which checks the file while
//! it arrives and keeps it only when it is whole.

use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::storage::BackupSummary;

/// Why an admin call failed; its text is what `aspen admin` prints.
#[derive(Debug, thiserror::Error)]
pub enum AdminCallError {
    #[error("admin: cannot build an HTTP client: {0}")]
    Client(reqwest::Error),
    /// The request did not get an answer (connection refused, cut, ...).
    #[error("admin: {url}: {source}")]
    Send { url: String, source: reqwest::Error },
    /// The node answered with a status other than 2xx, and this message.
    #[error("admin: {url}: {status}: {message}")]
    Refused {
        url: String,
        status: reqwest::StatusCode,
        message: String,
    },
    #[error("admin: /admin/{path}: bad answer: {source}")]
    BadAnswer {
        path: String,
        source: reqwest::Error,
    },
    /// The downloaded backup failed its check; nothing was kept.
    #[error("backup: {source} (nothing was written to {})", out.display())]
    BadBackup {
        out: PathBuf,
        source: crate::storage::Error,
    },
    /// The backup file could not be created, written or renamed into place.
    #[error("backup: {action} {}: {source}", path.display())]
    File {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Talks to one node's HTTP address.
pub struct AdminClient {
    base: String,
    token: Option<String>,
    http: reqwest::blocking::Client,
}

impl AdminClient {
    /// `base` is `http://IP:PORT` (or `IP:PORT`); `token` is the node's `http.admin_token`.
    pub fn new(base: &str, token: Option<String>) -> Result<AdminClient, AdminCallError> {
        let base = if base.starts_with("http://") || base.starts_with("https://") {
            base.trim_end_matches('/').to_string()
        } else {
            format!("http://{}", base.trim_end_matches('/'))
        };
        // No overall timeout: a backup or a compaction takes as long as it takes; but a node
        // that does not answer at all is reported.
        let http = reqwest::blocking::Client::builder()
            .timeout(None)
            .connect_timeout(std::time::Duration::from_secs(5))
            .build()
            .map_err(AdminCallError::Client)?;
        Ok(AdminClient { base, token, http })
    }

    /// `POST /admin/{path}`; a status other than 2xx becomes the error the node sent.
    fn post(&self, path: &str) -> Result<reqwest::blocking::Response, AdminCallError> {
        let url = format!("{}/admin/{path}", self.base);
        let mut request = self.http.post(&url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = match request.send() {
            Ok(response) => response,
            Err(source) => return Err(AdminCallError::Send { url, source }),
        };
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().unwrap_or_default();
        let message = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
            .unwrap_or(body);
        Err(AdminCallError::Refused {
            url,
            status,
            message,
        })
    }

    /// `POST /admin/{path}` and the JSON it answers.
    pub fn post_json(&self, path: &str) -> Result<Value, AdminCallError> {
        self.post(path)?
            .json()
            .map_err(|source| AdminCallError::BadAnswer {
                path: path.to_string(),
                source,
            })
    }

    /// Downloads a backup into `out`, checking it as it arrives (`progress` gets keys read and
    /// the total). Written to a temporary file beside `out` and renamed only once whole and
    /// checked; a cut or corrupt download leaves no file. Returns what it holds and its size.
    pub fn backup(
        &self,
        out: &Path,
        progress: impl FnMut(u64, u64),
    ) -> Result<(BackupSummary, u64), AdminCallError> {
        let dir = match out.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let tmp = tempfile::NamedTempFile::new_in(&dir).map_err(|source| AdminCallError::File {
            action: "cannot create a file in",
            path: dir.clone(),
            source,
        })?;
        let response = self.post("backup")?;
        let mut tee = Tee {
            inner: response,
            copy: BufWriter::new(tmp.as_file()),
            bytes: 0,
        };
        let reader = std::io::BufReader::with_capacity(256 << 10, &mut tee);
        let summary = crate::storage::verify_backup(reader, progress).map_err(|source| {
            AdminCallError::BadBackup {
                out: out.to_path_buf(),
                source,
            }
        })?;
        let bytes = tee.bytes;
        tee.copy
            .flush()
            .and_then(|_| tmp.as_file().sync_all())
            .map_err(|source| AdminCallError::File {
                action: "writing",
                path: out.to_path_buf(),
                source,
            })?;
        drop(tee);
        tmp.persist(out).map_err(|e| AdminCallError::File {
            action: "renaming to",
            path: out.to_path_buf(),
            source: e.error,
        })?;
        Ok((summary, bytes))
    }
}

/// Hands on what it reads and keeps a copy.
struct Tee<R: Read, W: Write> {
    inner: R,
    copy: W,
    bytes: u64,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.copy.write_all(&buf[..n])?;
        self.bytes += n as u64;
        Ok(n)
    }
}
