//! Network: the node's iroh endpoint and identity (`endpoint`), framing shared by the
//! protocols (`frame`), the Raft transport on ALPN `aspen/raft/1` (`raft`), the client
//! protocol on ALPN `aspen/client/1` (`proto` for its messages, `service` for the server),
//! pooled outgoing connections (`connections`), fault injection for tests (`faults`) and the
//! HTTP endpoints (`http`, with the `/admin/*` routes in `admin`). Never writes redb: it reads
//! the node through `crate::node::NodeShared` (read transactions only) and reaches actors
//! through messages.

pub mod admin;
pub mod connections;
pub mod endpoint;
pub mod faults;
pub mod frame;
pub mod http;
pub mod proto;
pub mod raft;
pub mod service;
