//! Who may do what, as etcd's auth does it: clients (known by the endpoint id their QUIC
//! handshake proves) hold roles; the role `root` may do everything; any other role grants
//! `read` or `readwrite` on key prefixes (a vault is the prefix `vault/NAME/`, so per-vault
//! roles come free). The state ([`AuthState`]) is replicated through Raft; [`AuthOp`] changes
//! it; [`Need`] is what one request asks for and [`AuthState::check`] decides.
//!
//! A range is allowed when one grant's prefix holds all of it; grants are not joined to cover
//! a range together (etcd joins them).
//!
//! Long because the permission check, the changes and the whole-state check must agree on one
//! set of rules, kept side by side (about 150 of its lines are tests).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::api::kv::{KeyRange, strinc};

/// A client's identity: the iroh endpoint id (public key) of its client key.
pub type ClientId = iroh::EndpointId;

/// The role that may do everything: membership, admin operations, auth changes, every key.
pub const ROOT_ROLE: &str = "root";
/// Role names are at most this many bytes.
pub const ROLE_NAME_BYTES_MAX: usize = 128;
/// Roles, clients, and grants per role: each at most this many.
pub const AUTH_ENTRIES_MAX: usize = 1_000;
/// The whole auth state, encoded, is at most this many bytes: it travels as one record of a
/// snapshot or a backup (`crate::limits::SNAPSHOT_RECORD_BYTES_MAX` bounds those).
pub const AUTH_STATE_BYTES_MAX: usize = 1 << 20;
const _: () = assert!(AUTH_STATE_BYTES_MAX < crate::limits::SNAPSHOT_RECORD_BYTES_MAX);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Perm {
    Read,
    ReadWrite,
}

impl Perm {
    pub fn name(self) -> &'static str {
        match self {
            Perm::Read => "read",
            Perm::ReadWrite => "readwrite",
        }
    }
}

impl std::str::FromStr for Perm {
    type Err = AuthError;
    fn from_str(text: &str) -> Result<Self, AuthError> {
        match text {
            "read" => Ok(Perm::Read),
            "readwrite" => Ok(Perm::ReadWrite),
            other => Err(AuthError::BadPerm(other.to_string())),
        }
    }
}

/// Why an auth change (or a permission's name) is refused. Its text is what the client is
/// told (`CommandError::Auth`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("permission {0:?}: expected read or readwrite")]
    BadPerm(String),
    #[error("role {0:?} does not exist")]
    NoSuchRole(String),
    #[error("role {0:?} exists")]
    RoleExists(String),
    #[error("client {0} is not known")]
    NoSuchClient(ClientId),
    #[error("client {id} does not hold role {role:?}")]
    RoleNotHeld { id: ClientId, role: String },
    #[error("role {role:?} has no grant on the prefix {prefix:?}")]
    NoSuchGrant { role: String, prefix: String },
    #[error("at most {AUTH_ENTRIES_MAX} {0}")]
    TooMany(&'static str),
    #[error("the last root client cannot be removed (add another root client first)")]
    LastRoot,
    #[error(
        "the auth state would take {0} bytes, more than the limit of {AUTH_STATE_BYTES_MAX} (remove grants or clients first)"
    )]
    StateTooLarge(usize),
    #[error("a role name is 1 to {ROLE_NAME_BYTES_MAX} bytes (got {0})")]
    RoleNameLength(usize),
    #[error("role name {0:?} holds a control character")]
    RoleNameControl(String),
    #[error("grant prefix: {0}")]
    BadPrefix(String),
    #[error("auth state: {0}")]
    Encoding(String),
}

/// `perm` on every key that starts with `prefix` (every key for an empty prefix).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Grant {
    pub prefix: Vec<u8>,
    pub perm: Perm,
}

/// The replicated auth state: clients with their roles, roles with their grants.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthState {
    pub clients: BTreeMap<ClientId, BTreeSet<String>>,
    pub roles: BTreeMap<String, BTreeSet<Grant>>,
}

/// A change to the auth state (root only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthOp {
    /// Adds the client if new, and grants it `roles` (each must exist, or be `root`).
    ClientAdd {
        id: ClientId,
        #[serde(deserialize_with = "crate::api::bounded::vec::<_, _, AUTH_ENTRIES_MAX>")]
        roles: Vec<String>,
    },
    ClientRemove {
        id: ClientId,
    },
    /// Takes `role` from the client.
    ClientRevoke {
        id: ClientId,
        role: String,
    },
    RoleAdd {
        name: String,
    },
    /// Removes the role and takes it from every client.
    RoleRemove {
        name: String,
    },
    RoleGrant {
        name: String,
        grant: Grant,
    },
    /// Removes the role's grant on exactly this prefix.
    RoleRevoke {
        name: String,
        prefix: Vec<u8>,
    },
}

/// What one request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// Any client, known or not (status, whoami).
    Nothing,
    /// Any known client (leases, lease list).
    Known,
    /// The root role (membership, auth changes, anything not tied to keys).
    Root,
    /// These permissions on these key ranges.
    Keys(Vec<(KeyRange, Perm)>),
}

/// Why a request was refused: one line naming what was missing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("permission denied: {0}")]
pub struct Denied(pub String);

impl AuthState {
    /// Whether any client holds `root`: until one does, the cluster is not bootstrapped.
    pub fn has_root(&self) -> bool {
        self.clients.values().any(|roles| roles.contains(ROOT_ROLE))
    }

    pub fn is_root(&self, client: &ClientId) -> bool {
        self.clients
            .get(client)
            .is_some_and(|roles| roles.contains(ROOT_ROLE))
    }

    /// Every grant the client holds through its roles.
    pub fn grants(&self, client: &ClientId) -> impl Iterator<Item = &Grant> {
        self.clients
            .get(client)
            .into_iter()
            .flatten()
            .filter_map(|role| self.roles.get(role))
            .flatten()
    }

    /// The prefixes the client may read (`None`: every key, for root or a grant on "").
    pub fn readable(&self, client: &ClientId) -> Option<Vec<Vec<u8>>> {
        if self.is_root(client) {
            return None;
        }
        let prefixes: Vec<Vec<u8>> = self.grants(client).map(|g| g.prefix.clone()).collect();
        if prefixes.iter().any(Vec::is_empty) {
            return None;
        }
        Some(prefixes)
    }

    /// Allows the request or names what the client lacks.
    pub fn check(&self, client: &ClientId, need: &Need) -> Result<(), Denied> {
        if self.is_root(client) || *need == Need::Nothing {
            return Ok(());
        }
        if !self.clients.contains_key(client) {
            return Err(Denied(format!(
                "client {client} is not known to the cluster (a root client adds it: aspen auth client add {client})"
            )));
        }
        match need {
            Need::Nothing | Need::Known => Ok(()),
            Need::Root => Err(Denied(format!(
                "this operation needs the {ROOT_ROLE} role, which client {client} does not hold"
            ))),
            Need::Keys(wanted) => {
                for (range, perm) in wanted {
                    let held = self
                        .grants(client)
                        .any(|grant| grant.perm >= *perm && covers(&grant.prefix, range));
                    if !held {
                        return Err(Denied(format!(
                            "client {client} has no {} permission on {}",
                            perm.name(),
                            describe(range)
                        )));
                    }
                }
                Ok(())
            }
        }
    }

    /// Applies `op`, or says why it cannot be (nothing changes then).
    pub fn apply(&mut self, op: &AuthOp) -> Result<(), AuthError> {
        let mut next = self.clone();
        next.change(op)?;
        let bytes = postcard::experimental::serialized_size(&next)
            .map_err(|e| AuthError::Encoding(e.to_string()))?;
        if bytes > AUTH_STATE_BYTES_MAX {
            return Err(AuthError::StateTooLarge(bytes));
        }
        *self = next;
        Ok(())
    }

    fn change(&mut self, op: &AuthOp) -> Result<(), AuthError> {
        match op {
            AuthOp::ClientAdd { id, roles } => {
                for role in roles {
                    if role != ROOT_ROLE && !self.roles.contains_key(role) {
                        return Err(AuthError::NoSuchRole(role.clone()));
                    }
                }
                if !self.clients.contains_key(id) && self.clients.len() >= AUTH_ENTRIES_MAX {
                    return Err(AuthError::TooMany("clients"));
                }
                self.clients
                    .entry(*id)
                    .or_default()
                    .extend(roles.iter().cloned());
            }
            AuthOp::ClientRemove { id } => {
                self.clients
                    .remove(id)
                    .ok_or(AuthError::NoSuchClient(*id))?;
                self.keep_a_root()?;
            }
            AuthOp::ClientRevoke { id, role } => {
                let roles = self
                    .clients
                    .get_mut(id)
                    .ok_or(AuthError::NoSuchClient(*id))?;
                if !roles.remove(role) {
                    return Err(AuthError::RoleNotHeld {
                        id: *id,
                        role: role.clone(),
                    });
                }
                self.keep_a_root()?;
            }
            AuthOp::RoleAdd { name } => {
                check_role_name(name)?;
                if name == ROOT_ROLE || self.roles.contains_key(name) {
                    return Err(AuthError::RoleExists(name.clone()));
                }
                if self.roles.len() >= AUTH_ENTRIES_MAX {
                    return Err(AuthError::TooMany("roles"));
                }
                self.roles.insert(name.clone(), BTreeSet::new());
            }
            AuthOp::RoleRemove { name } => {
                self.roles
                    .remove(name)
                    .ok_or_else(|| AuthError::NoSuchRole(name.clone()))?;
                for roles in self.clients.values_mut() {
                    roles.remove(name);
                }
            }
            AuthOp::RoleGrant { name, grant } => {
                let grants = self
                    .roles
                    .get_mut(name)
                    .ok_or_else(|| AuthError::NoSuchRole(name.clone()))?;
                check_prefix(&grant.prefix)?;
                grants.retain(|g| g.prefix != grant.prefix);
                if grants.len() >= AUTH_ENTRIES_MAX {
                    return Err(AuthError::TooMany("grants per role"));
                }
                grants.insert(grant.clone());
            }
            AuthOp::RoleRevoke { name, prefix } => {
                let grants = self
                    .roles
                    .get_mut(name)
                    .ok_or_else(|| AuthError::NoSuchRole(name.clone()))?;
                let before = grants.len();
                grants.retain(|g| g.prefix != *prefix);
                if grants.len() == before {
                    return Err(AuthError::NoSuchGrant {
                        role: name.clone(),
                        prefix: String::from_utf8_lossy(prefix).into_owned(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Refuses a change that would leave no root client: nobody could change auth again.
    fn keep_a_root(&self) -> Result<(), AuthError> {
        if self.has_root() {
            Ok(())
        } else {
            Err(AuthError::LastRoot)
        }
    }
}

impl AuthState {
    /// Checks a whole state as the changes that build one would (for a state read from a
    /// snapshot or a backup): the counts, the names, the prefixes, every role a client holds
    /// exists, and the encoded size.
    pub fn validate(&self) -> Result<(), AuthError> {
        if self.clients.len() > AUTH_ENTRIES_MAX {
            return Err(AuthError::TooMany("clients"));
        }
        if self.roles.len() > AUTH_ENTRIES_MAX {
            return Err(AuthError::TooMany("roles"));
        }
        for (name, grants) in &self.roles {
            check_role_name(name)?;
            if name == ROOT_ROLE {
                return Err(AuthError::RoleExists(name.clone()));
            }
            if grants.len() > AUTH_ENTRIES_MAX {
                return Err(AuthError::TooMany("grants per role"));
            }
            grants
                .iter()
                .try_for_each(|grant| check_prefix(&grant.prefix))?;
        }
        for roles in self.clients.values() {
            if roles.len() > AUTH_ENTRIES_MAX {
                return Err(AuthError::TooMany("roles per client"));
            }
            if let Some(missing) = roles
                .iter()
                .find(|role| *role != ROOT_ROLE && !self.roles.contains_key(*role))
            {
                return Err(AuthError::NoSuchRole(missing.clone()));
            }
        }
        let bytes = postcard::experimental::serialized_size(self)
            .map_err(|e| AuthError::Encoding(e.to_string()))?;
        if bytes > AUTH_STATE_BYTES_MAX {
            return Err(AuthError::StateTooLarge(bytes));
        }
        Ok(())
    }
}

impl AuthOp {
    /// Checks the limits that do not depend on the state.
    pub fn validate(&self) -> Result<(), AuthError> {
        match self {
            AuthOp::ClientAdd { roles, .. } => {
                if roles.len() > AUTH_ENTRIES_MAX {
                    return Err(AuthError::TooMany("roles per client"));
                }
                roles.iter().try_for_each(|r| check_role_name(r))
            }
            AuthOp::ClientRemove { .. } => Ok(()),
            AuthOp::ClientRevoke { role: name, .. }
            | AuthOp::RoleAdd { name }
            | AuthOp::RoleRemove { name } => check_role_name(name),
            AuthOp::RoleGrant { name, grant } => {
                check_role_name(name)?;
                check_prefix(&grant.prefix)
            }
            AuthOp::RoleRevoke { name, prefix } => {
                check_role_name(name)?;
                check_prefix(prefix)
            }
        }
    }
}

fn check_role_name(name: &str) -> Result<(), AuthError> {
    if name.is_empty() || name.len() > ROLE_NAME_BYTES_MAX {
        return Err(AuthError::RoleNameLength(name.len()));
    }
    if name.chars().any(char::is_control) {
        return Err(AuthError::RoleNameControl(name.to_string()));
    }
    Ok(())
}

fn check_prefix(prefix: &[u8]) -> Result<(), AuthError> {
    crate::api::kv::check_key_len(prefix, true).map_err(|e| AuthError::BadPrefix(e.to_string()))
}

/// Whether every key of `range` starts with `prefix`.
fn covers(prefix: &[u8], range: &KeyRange) -> bool {
    if !range.start.starts_with(prefix) {
        return false;
    }
    match (strinc(prefix), &range.end) {
        // Empty or all-0xff prefix: it holds everything from its start on.
        (None, _) => true,
        (Some(_), None) => false,
        (Some(limit), Some(end)) => *end <= limit || *end <= range.start,
    }
}

fn describe(range: &KeyRange) -> String {
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    match &range.end {
        None => format!("the keys from {:?} on", text(&range.start)),
        Some(end) if *end == next_key(&range.start) => format!("the key {:?}", text(&range.start)),
        Some(end) => format!("the range [{:?}, {:?})", text(&range.start), text(end)),
    }
}

/// The smallest key after `key`.
fn next_key(key: &[u8]) -> Vec<u8> {
    let mut next = key.to_vec();
    next.push(0);
    next
}

/// The range holding exactly `key`.
pub fn single_key(key: &[u8]) -> KeyRange {
    KeyRange {
        start: key.to_vec(),
        end: Some(next_key(key)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(n: u8) -> ClientId {
        iroh::SecretKey::from_bytes(&[n; 32]).public()
    }

    fn state() -> AuthState {
        let mut auth = AuthState::default();
        auth.apply(&AuthOp::ClientAdd {
            id: client(1),
            roles: vec![ROOT_ROLE.into()],
        })
        .unwrap();
        auth.apply(&AuthOp::RoleAdd { name: "app".into() }).unwrap();
        auth.apply(&AuthOp::RoleGrant {
            name: "app".into(),
            grant: Grant {
                prefix: b"app/".to_vec(),
                perm: Perm::Read,
            },
        })
        .unwrap();
        auth.apply(&AuthOp::ClientAdd {
            id: client(2),
            roles: vec!["app".into()],
        })
        .unwrap();
        auth
    }

    // Proves a prefix grant allows reads of its keys and ranges and nothing outside, refuses
    // writes to a read-only role, lets root do everything, and names what was missing.
    #[test]
    fn a_grant_covers_its_prefix_only() {
        let auth = state();
        let (root, reader, stranger) = (client(1), client(2), client(3));
        let read = |range: KeyRange| Need::Keys(vec![(range, Perm::Read)]);
        assert!(auth.check(&reader, &read(single_key(b"app/x"))).is_ok());
        assert!(
            auth.check(&reader, &read(KeyRange::prefix(b"app/")))
                .is_ok()
        );
        assert!(
            auth.check(&reader, &read(KeyRange::prefix(b"app/a/")))
                .is_ok()
        );
        let wider = auth.check(&reader, &read(KeyRange::prefix(b"app")));
        assert!(wider.unwrap_err().0.contains("no read permission"));
        let outside = auth.check(&reader, &read(single_key(b"other")));
        assert!(outside.unwrap_err().0.contains("the key \"other\""));
        let write = Need::Keys(vec![(single_key(b"app/x"), Perm::ReadWrite)]);
        let refused = auth.check(&reader, &write).unwrap_err().0;
        assert!(refused.contains("no readwrite permission"), "{refused}");
        assert!(auth.check(&reader, &Need::Root).is_err());
        assert!(auth.check(&reader, &Need::Known).is_ok());
        assert!(auth.check(&root, &write).is_ok() && auth.check(&root, &Need::Root).is_ok());
        let unknown = auth.check(&stranger, &Need::Known).unwrap_err().0;
        assert!(unknown.contains("not known"), "{unknown}");
        assert!(auth.check(&stranger, &Need::Nothing).is_ok());
        assert_eq!(auth.readable(&reader), Some(vec![b"app/".to_vec()]));
        assert_eq!(auth.readable(&root), None);
    }

    // Proves the state refuses changes that name what does not exist, and never loses its
    // last root client; a removed role leaves every client.
    #[test]
    fn changes_keep_the_state_whole() {
        let mut auth = state();
        let before = auth.clone();
        let missing = auth.apply(&AuthOp::ClientAdd {
            id: client(4),
            roles: vec!["nope".into()],
        });
        assert_eq!(missing, Err(AuthError::NoSuchRole("nope".into())));
        let last_root = auth.apply(&AuthOp::ClientRemove { id: client(1) });
        assert_eq!(last_root, Err(AuthError::LastRoot));
        assert!(AuthError::LastRoot.to_string().contains("last root client"));
        assert_eq!(auth, before);
        auth.apply(&AuthOp::RoleRemove { name: "app".into() })
            .unwrap();
        assert!(auth.clients[&client(2)].is_empty());
        assert_eq!(
            auth.apply(&AuthOp::RoleAdd { name: "".into() }),
            Err(AuthError::RoleNameLength(0))
        );
        // The encoded state stays under its limit: grants with 8 KiB prefixes stop there.
        auth.apply(&AuthOp::RoleAdd { name: "big".into() }).unwrap();
        let refused = (0..200u32).find_map(|i| {
            let mut prefix = vec![b'p'; crate::limits::KEY_BYTES_MAX - 4];
            prefix.extend_from_slice(&i.to_be_bytes());
            let grant = Grant {
                prefix,
                perm: Perm::Read,
            };
            auth.apply(&AuthOp::RoleGrant {
                name: "big".into(),
                grant,
            })
            .err()
        });
        assert!(matches!(refused, Some(AuthError::StateTooLarge(_))));
        assert!(postcard::to_allocvec(&auth).unwrap().len() <= AUTH_STATE_BYTES_MAX);
        assert!(
            auth.apply(&AuthOp::RoleAdd {
                name: ROOT_ROLE.into()
            })
            .is_err()
        );
    }
}
