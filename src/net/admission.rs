//! The node-wide bounds on client work, counted for the client server (`service`): requests
//! being read or served (`net.requests_max`) and open client connections
//! (`net.connections_max`).

use std::sync::Arc;

/// The node-wide bounds on client work: requests being read or served (`net.requests_max`)
/// and open connections (`net.connections_max`). Each is taken without waiting: when none is
/// left the request or connection is refused at once, so a flood costs the node nothing more.
#[derive(Clone)]
pub struct Admission {
    requests: Arc<tokio::sync::Semaphore>,
    requests_max: u32,
    connections: Arc<tokio::sync::Semaphore>,
    connections_max: u32,
}

impl Admission {
    pub fn new(requests_max: u32, connections_max: u32) -> Self {
        Admission {
            requests: Arc::new(tokio::sync::Semaphore::new(requests_max as usize)),
            requests_max,
            connections: Arc::new(tokio::sync::Semaphore::new(connections_max as usize)),
            connections_max,
        }
    }

    /// Room for one more request, held until its answer is written; `None` when
    /// `requests_max` are in progress.
    pub(super) fn try_request(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        Arc::clone(&self.requests).try_acquire_owned().ok()
    }

    /// Room for one more client connection, held while it is open; `None` when
    /// `connections_max` are open.
    pub(super) fn try_connection(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        Arc::clone(&self.connections).try_acquire_owned().ok()
    }

    pub fn requests_max(&self) -> u32 {
        self.requests_max
    }

    pub fn connections_max(&self) -> u32 {
        self.connections_max
    }

    /// Client connections open now.
    pub fn connections_open(&self) -> u32 {
        let available = self.connections.available_permits();
        self.connections_max
            .saturating_sub(u32::try_from(available).unwrap_or(u32::MAX))
    }

    /// Client requests being read or served now.
    pub fn requests_in_progress(&self) -> u32 {
        let available = self.requests.available_permits();
        self.requests_max
            .saturating_sub(u32::try_from(available).unwrap_or(u32::MAX))
    }
}
