//! Network: the node's iroh endpoint and identity (`endpoint`), framing shared by the
//! protocols (`frame`, the only codec), pooled outgoing connections (`connections`), the Raft
//! transport on ALPN `aspen/raft/1` (`raft` sends, `raft_service` serves), the client
//! protocol's server on ALPN `aspen/client/1` (`service`, with its bounds in `admission`; its
//! messages are `crate::api`),
//! and the HTTP endpoints (`http`, with the `/admin/*` routes
//! in `admin`).
//!
//! Never names storage, the actors or the node: each server declares the port it needs
//! (`service::ClientPort`, `raft_service::RaftPort`, `http::HttpPort`) and the node
//! implements it.

pub mod admin;
pub mod admission;
pub mod connections;
pub mod endpoint;
pub mod frame;
pub mod http;
pub mod raft;
pub mod raft_service;
pub mod service;
