//! Outgoing QUIC connections, one per (peer, protocol), reused while they live and replaced
//! when they die; every request is one bidirectional stream with one frame each way, under a
//! timeout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iroh::Endpoint;
use iroh::endpoint::Connection;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::net::endpoint::NodeAddress;
use crate::net::frame::{FrameError, read_frame, write_frame};

/// Why a request to a peer failed, and whether it may have been delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// No connection: the request was not sent.
    #[error("cannot connect to {address}: {reason}")]
    Connect { address: String, reason: String },
    /// The request may have been delivered; its outcome is unknown.
    #[error("request to {address} failed: {reason}")]
    Stream { address: String, reason: String },
    #[error("request to {address} timed out after {ms} ms")]
    Timeout { address: String, ms: u64 },
    /// The request could not be encoded within the frame limit: nothing was sent.
    #[error("request not sent: {0}")]
    Frame(FrameError),
}

impl RequestError {
    /// Whether the peer certainly did not receive the request.
    pub fn not_sent(&self) -> bool {
        matches!(self, RequestError::Connect { .. } | RequestError::Frame(_))
    }
}

/// Live connections by peer and protocol.
type Pool = HashMap<(NodeAddress, &'static [u8]), Connection>;

/// A pool of outgoing connections over one endpoint.
#[derive(Debug, Clone)]
pub struct Connections {
    endpoint: Endpoint,
    live: Arc<Mutex<Pool>>,
    connect_timeout: Duration,
}

impl Connections {
    /// The endpoint the connections are opened from.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub fn new(endpoint: Endpoint, connect_timeout: Duration) -> Self {
        Connections {
            endpoint,
            live: Arc::default(),
            connect_timeout,
        }
    }

    /// The same pool with another connect timeout.
    pub fn with_connect_timeout(mut self, connect_timeout: Duration) -> Self {
        self.connect_timeout = connect_timeout;
        self
    }

    /// A live connection to `to` on `alpn`: the pooled one, or a new one.
    pub async fn connection(
        &self,
        to: &NodeAddress,
        alpn: &'static [u8],
    ) -> Result<Connection, RequestError> {
        if let Some(conn) = self.lock().get(&(*to, alpn))
            && conn.close_reason().is_none()
        {
            return Ok(conn.clone());
        }
        let connect_error = |reason: String| RequestError::Connect {
            address: to.to_string(),
            reason,
        };
        let conn = tokio::time::timeout(
            self.connect_timeout,
            self.endpoint.connect(to.endpoint_addr(), alpn),
        )
        .await
        .map_err(|_| connect_error(format!("no answer in {:?}", self.connect_timeout)))?
        .map_err(|e| connect_error(e.to_string()))?;
        self.lock().insert((*to, alpn), conn.clone());
        Ok(conn)
    }

    /// Whether a live connection to `to` on `alpn` is pooled now.
    pub fn is_live(&self, to: &NodeAddress, alpn: &'static [u8]) -> bool {
        self.lock()
            .get(&(*to, alpn))
            .is_some_and(|conn| conn.close_reason().is_none())
    }

    fn forget(&self, to: &NodeAddress, alpn: &'static [u8]) {
        self.lock().remove(&(*to, alpn));
    }

    /// Sends `request` to `to` on protocol `alpn` and reads one response frame, all within
    /// `timeout`. A broken or timed-out connection is dropped from the pool, so the next call
    /// reconnects.
    pub async fn request<Req, Resp>(
        &self,
        to: &NodeAddress,
        alpn: &'static [u8],
        request: &Req,
        timeout: Duration,
        frame_max: usize,
    ) -> Result<Resp, RequestError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let attempt = async {
            let conn = self.connection(to, alpn).await?;
            let stream_error = |reason: String| RequestError::Stream {
                address: to.to_string(),
                reason,
            };
            let (mut send, mut recv) = match conn.open_bi().await {
                Ok(streams) => streams,
                Err(error) => {
                    // The stream never opened: nothing was sent.
                    return Err(RequestError::Connect {
                        address: to.to_string(),
                        reason: error.to_string(),
                    });
                }
            };
            match write_frame(&mut send, request, frame_max).await {
                Ok(()) => {}
                Err(FrameError::TooLarge { bytes, max }) => {
                    return Err(RequestError::Frame(FrameError::TooLarge { bytes, max }));
                }
                Err(error) => return Err(stream_error(error.to_string())),
            }
            send.finish().map_err(|e| stream_error(e.to_string()))?;
            read_frame(&mut recv, frame_max)
                .await
                .map_err(|e| stream_error(e.to_string()))
        };
        let result = match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(RequestError::Timeout {
                address: to.to_string(),
                ms: timeout.as_millis() as u64,
            }),
        };
        // A timeout drops the connection too: the peer may have died and come back on the
        // same address (a restarted process), which the old connection would only notice
        // at its idle timeout. Requests still running on it keep their handle.
        if matches!(
            result,
            Err(RequestError::Connect { .. }
                | RequestError::Stream { .. }
                | RequestError::Timeout { .. })
        ) {
            self.forget(to, alpn);
        }
        result
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pool> {
        // Map inserts and removes cannot leave it half-updated.
        crate::sync::lock(&self.live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iroh::SecretKey;
    use iroh::protocol::{AcceptError, ProtocolHandler, Router};

    const ALPN: &[u8] = b"aspen/test-connections/1";
    const FRAME_MAX: usize = 1024;

    /// Answers each request with its own text, except "hang", which it never answers (a peer
    /// that stopped responding while its QUIC connection stays up).
    #[derive(Debug, Clone)]
    struct Echo;

    impl ProtocolHandler for Echo {
        async fn accept(&self, conn: iroh::endpoint::Connection) -> Result<(), AcceptError> {
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                tokio::spawn(async move {
                    let Ok(text) = read_frame::<_, String>(&mut recv, FRAME_MAX).await else {
                        return;
                    };
                    if text == "hang" {
                        // Keep the stream open, unanswered, until the connection ends.
                        let _ = send.stopped().await;
                        return;
                    }
                    let _ = write_frame(&mut send, &text, FRAME_MAX).await;
                    let _ = send.finish();
                    let _ = send.stopped().await;
                });
            }
            Ok(())
        }
    }

    async fn endpoint(alpns: Vec<Vec<u8>>) -> Endpoint {
        crate::net::endpoint::bind(SecretKey::generate(), "127.0.0.1:0".parse().unwrap(), alpns)
            .await
            .expect("bind a loopback endpoint")
    }

    // Proves a connection that fails a request (here: no answer within the timeout, while
    // the QUIC connection itself stays up and keeps answering keep-alives) leaves the pool at
    // once, and the next request opens a new connection instead of waiting on the old one
    // until its idle timeout.
    #[tokio::test]
    async fn a_connection_that_fails_a_request_is_replaced_at_once() {
        let server = endpoint(vec![ALPN.to_vec()]).await;
        let address = crate::net::endpoint::local_address(&server).unwrap();
        let router = Router::builder(server).accept(ALPN, Echo).spawn();
        let pool = Connections::new(endpoint(Vec::new()).await, Duration::from_secs(10));
        let long = Duration::from_secs(30);
        let ask = |text: &'static str, timeout: Duration| {
            let (pool, address) = (&pool, &address);
            async move {
                pool.request::<_, String>(address, ALPN, &text.to_string(), timeout, FRAME_MAX)
                    .await
            }
        };

        assert_eq!(ask("one", long).await.unwrap(), "one");
        let first = pool.connection(&address, ALPN).await.unwrap();

        let failed = ask("hang", Duration::from_millis(300)).await.unwrap_err();
        assert!(matches!(failed, RequestError::Timeout { .. }), "{failed}");
        assert!(
            first.close_reason().is_none(),
            "the old connection is still up"
        );
        assert!(
            !pool.is_live(&address, ALPN),
            "the failed connection left the pool"
        );

        assert_eq!(ask("two", long).await.unwrap(), "two");
        let second = pool.connection(&address, ALPN).await.unwrap();
        assert_ne!(
            first.stable_id(),
            second.stable_id(),
            "the request after the failure went over a new connection"
        );
        router.shutdown().await.unwrap();
    }
}
