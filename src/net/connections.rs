//! Outgoing QUIC connections, one per (peer, protocol), reused while they live and replaced
//! when they die; a request is one frame each way on a bidirectional stream, under a
//! timeout: a stream of its own, or one a caller keeps for its sequence of requests
//! (`Session`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iroh::Endpoint;
use iroh::endpoint::{Connection, RecvStream, SendStream};
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

/// A stream kept open on a pooled connection for a sequence of requests to one peer
/// ([`Connections::request_on`]). Dropping it finishes the stream (noq's `SendStream` does),
/// so the receiver sees the sender is done.
#[derive(Debug)]
pub struct Session {
    conn: Connection,
    send: SendStream,
    recv: RecvStream,
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

    /// Drops the pooled connection to `to` on `alpn`: the next call reconnects.
    pub fn forget(&self, to: &NodeAddress, alpn: &'static [u8]) {
        self.lock().remove(&(*to, alpn));
    }

    /// Sends `request` to `to` on protocol `alpn` and reads one response frame, all within
    /// `timeout`, on a stream of its own. A broken or timed-out connection is dropped from
    /// the pool, so the next call reconnects.
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
        self.request_on(&mut None, to, alpn, request, timeout, frame_max)
            .await
    }

    /// Like [`Connections::request`], on the stream `session` holds, opened first when it
    /// holds none (or its connection died): a sequence of requests to one peer, one at a
    /// time, shares one stream (the receiver answers each frame in turn). The stream is back
    /// in `session` only once its request was answered (or refused before a byte was
    /// written): after a failure, and when the caller drops this future before the answer
    /// (its own timeout), `session` is empty, so no later request can read an answer meant
    /// for an earlier one. A failure on a stream used before drops only that stream (the
    /// receiver may have ended it: a node answering one request per stream); any other
    /// failure drops the connection too.
    pub async fn request_on<Req, Resp>(
        &self,
        session: &mut Option<Session>,
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
        let kept = session.take().filter(|s| s.conn.close_reason().is_none());
        let reused = kept.is_some();
        let attempt = async {
            let mut open = match kept {
                Some(open) => open,
                None => {
                    let conn = self.connection(to, alpn).await?;
                    let (send, recv) = conn.open_bi().await.map_err(|error| {
                        // The stream never opened: nothing was sent.
                        RequestError::Connect {
                            address: to.to_string(),
                            reason: error.to_string(),
                        }
                    })?;
                    Session { conn, send, recv }
                }
            };
            let stream_error = |reason: String| RequestError::Stream {
                address: to.to_string(),
                reason,
            };
            match write_frame(&mut open.send, request, frame_max).await {
                Ok(()) => {}
                Err(FrameError::TooLarge { bytes, max }) => {
                    // Refused before writing: the stream is as it was.
                    *session = Some(open);
                    return Err(RequestError::Frame(FrameError::TooLarge { bytes, max }));
                }
                Err(error) => return Err(stream_error(error.to_string())),
            }
            let answer = read_frame(&mut open.recv, frame_max)
                .await
                .map_err(|e| stream_error(e.to_string()))?;
            *session = Some(open);
            Ok(answer)
        };
        let result = match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(RequestError::Timeout {
                address: to.to_string(),
                ms: timeout.as_millis() as u64,
            }),
        };
        match &result {
            Ok(_) | Err(RequestError::Frame(_)) => {}
            Err(RequestError::Stream { .. }) if reused => {}
            // A timeout drops the connection too: the peer may have died and come back on
            // the same address (a restarted process), which the old connection would only
            // notice at its idle timeout. Requests still running on it keep their handle.
            Err(_) => self.forget(to, alpn),
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

    /// Answers every frame of a stream in turn until the stream ends (what a session's
    /// receiver does; "slow" after 300 ms), counting the streams it accepted.
    #[derive(Debug, Clone, Default)]
    struct EchoEach(Arc<std::sync::atomic::AtomicUsize>);

    impl ProtocolHandler for EchoEach {
        async fn accept(&self, conn: iroh::endpoint::Connection) -> Result<(), AcceptError> {
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    while let Ok(text) = read_frame::<_, String>(&mut recv, FRAME_MAX).await {
                        if text == "slow" {
                            tokio::time::sleep(Duration::from_millis(300)).await;
                        }
                        if write_frame(&mut send, &text, FRAME_MAX).await.is_err() {
                            return;
                        }
                    }
                    let _ = send.finish();
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

    // Proves a session carries a sequence of requests over one stream (the receiver accepted
    // one), and that against a receiver answering one frame per stream (an older node) the
    // second request on it fails and empties the session, so the next one opens a new stream
    // and succeeds.
    #[tokio::test]
    async fn a_session_shares_one_stream_and_recovers_from_a_one_shot_peer() {
        let long = Duration::from_secs(30);
        let streams = EchoEach::default();
        let server = endpoint(vec![ALPN.to_vec()]).await;
        let address = crate::net::endpoint::local_address(&server).unwrap();
        let router = Router::builder(server)
            .accept(ALPN, streams.clone())
            .spawn();
        let pool = Connections::new(endpoint(Vec::new()).await, Duration::from_secs(10));
        let mut session = None;
        for text in ["one", "two", "three"] {
            let answer: String = pool
                .request_on(
                    &mut session,
                    &address,
                    ALPN,
                    &text.to_string(),
                    long,
                    FRAME_MAX,
                )
                .await
                .unwrap();
            assert_eq!(answer, text);
        }
        assert_eq!(streams.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        router.shutdown().await.unwrap();

        let server = endpoint(vec![ALPN.to_vec()]).await;
        let address = crate::net::endpoint::local_address(&server).unwrap();
        let router = Router::builder(server).accept(ALPN, Echo).spawn();
        let mut session = None;
        let mut ask = async |text: &str| {
            pool.request_on::<_, String>(
                &mut session,
                &address,
                ALPN,
                &text.to_string(),
                long,
                FRAME_MAX,
            )
            .await
        };
        assert_eq!(ask("one").await.unwrap(), "one");
        let failed = ask("two").await.unwrap_err();
        assert!(matches!(failed, RequestError::Stream { .. }), "{failed}");
        assert_eq!(ask("three").await.unwrap(), "three");
        router.shutdown().await.unwrap();
    }

    // Proves a session is safe when its caller gives up first (openraft's own timeout drops
    // the call after the request was written): the next request goes on a new stream and
    // gets its own answer, never the late answer of the abandoned one (before, it read "slow").
    #[tokio::test]
    async fn an_abandoned_request_never_answers_the_next() {
        let server = endpoint(vec![ALPN.to_vec()]).await;
        let address = crate::net::endpoint::local_address(&server).unwrap();
        let router = Router::builder(server)
            .accept(ALPN, EchoEach::default())
            .spawn();
        let pool = Connections::new(endpoint(Vec::new()).await, Duration::from_secs(10));
        let mut session = None;
        async fn say(
            pool: &Connections,
            session: &mut Option<Session>,
            address: &NodeAddress,
            text: &str,
        ) -> Result<String, RequestError> {
            let long = Duration::from_secs(30);
            pool.request_on(session, address, ALPN, &text.to_string(), long, FRAME_MAX)
                .await
        }
        assert_eq!(
            say(&pool, &mut session, &address, "first").await.unwrap(),
            "first"
        );
        let abandoned = tokio::time::timeout(
            Duration::from_millis(50),
            say(&pool, &mut session, &address, "slow"),
        )
        .await;
        assert!(abandoned.is_err(), "the caller gave up first");
        assert_eq!(
            say(&pool, &mut session, &address, "next").await.unwrap(),
            "next"
        );
        router.shutdown().await.unwrap();
    }
}
