//! Where a node is reached: `ENDPOINT_ID@IP:PORT`, as users write it in the config, on the
//! command line and in `DATA_DIR/node.addr`. Parsing and printing only; dialling is `net`'s.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use iroh::{EndpointAddr, EndpointId};

/// Where a node is reached: its endpoint id (public key) and a socket address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeAddress {
    pub id: EndpointId,
    pub socket: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("net: bad node address {text:?}: {reason} (expected ENDPOINT_ID@IP:PORT)")]
pub struct AddressError {
    pub text: String,
    pub reason: String,
}

impl NodeAddress {
    pub fn endpoint_addr(&self) -> EndpointAddr {
        EndpointAddr::new(self.id).with_ip_addr(self.socket)
    }
}

impl fmt::Display for NodeAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id, self.socket)
    }
}

impl FromStr for NodeAddress {
    type Err = AddressError;

    fn from_str(text: &str) -> Result<Self, AddressError> {
        let error = |reason: String| AddressError {
            text: text.to_string(),
            reason,
        };
        let (id, socket) = text
            .trim()
            .split_once('@')
            .ok_or_else(|| error("no '@'".into()))?;
        Ok(NodeAddress {
            id: id.parse().map_err(|e| error(format!("endpoint id: {e}")))?,
            socket: socket
                .parse()
                .map_err(|e| error(format!("socket address: {e}")))?,
        })
    }
}
