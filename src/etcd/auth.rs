//! etcd's `Auth` service mapped onto Aspen's roles (`crate::api::auth`): an etcd user is an
//! Aspen client, named by its client id (the endpoint id of its key, as `aspen auth whoami`
//! prints it), without a password: Aspen's clients prove who they are with their key, as
//! etcd's certificate (CN) users do. Roles are Aspen's roles (`root` is built in); a
//! permission is a grant of read or readwrite on a key prefix. Passwords, tokens and
//! switching auth at runtime have no Aspen counterpart and are refused, saying so.

use tonic::{Request, Response, Status};

use crate::api::Consistency;
use crate::api::kv::strinc;
use crate::api::{
    AuthOp, AuthState, ClientId, ClientOp, ClientOutput, Grant, KeyRange, Perm, ROOT_ROLE,
};
use crate::etcd::proto::authpb::{Permission, permission::Type as PermType};
use crate::etcd::proto::etcdserverpb::{self as pb, ResponseHeader, auth_server::Auth};
use crate::etcd::{EtcdPort, Gateway, key_range};

impl<P: EtcdPort> Gateway<P> {
    /// The cluster's auth state (root only), read linearizably.
    async fn auth_state(&self) -> Result<(AuthState, Option<ResponseHeader>), Status> {
        let answer = self
            .run(ClientOp::AuthList {
                consistency: Consistency::Linearizable,
            })
            .await?;
        match answer.output {
            ClientOutput::Auth(state) => {
                Ok((state, self.header(answer.revision, answer.served_by)))
            }
            _ => Err(Status::internal("the auth list answered something else")),
        }
    }

    /// Applies an auth change (root only; through Raft) after checking it against the state
    /// as etcd does, so a refusal carries etcd's error; the header of its answer.
    async fn auth_change(&self, op: AuthOp) -> Result<Option<ResponseHeader>, Status> {
        let (state, _) = self.auth_state().await?;
        etcd_precondition(&state, &op)?;
        let answer = self.run(ClientOp::Auth(op)).await?;
        Ok(self.header(answer.revision, answer.served_by))
    }
}

/// etcd's refusal of an auth change the state does not allow, where etcd has one (what it
/// does not cover, Aspen's state machine refuses with its own message).
fn etcd_precondition(state: &AuthState, op: &AuthOp) -> Result<(), Status> {
    let refuse = |etcd: &str| Err(Status::failed_precondition(format!("etcdserver: {etcd}")));
    let role_exists = |name: &str| name == ROOT_ROLE || state.roles.contains_key(name);
    match op {
        AuthOp::ClientAdd { id, roles } => {
            if !state.clients.contains_key(id) && roles.is_empty() {
                return Ok(());
            }
            if !state.clients.contains_key(id) {
                return refuse("user name not found");
            }
            if !roles.iter().all(|role| role_exists(role)) {
                return refuse("role name not found");
            }
        }
        AuthOp::ClientRemove { id } if !state.clients.contains_key(id) => {
            return refuse("user name not found");
        }
        AuthOp::ClientRevoke { id, role } => match state.clients.get(id) {
            None => return refuse("user name not found"),
            Some(roles) if !roles.contains(role) => {
                return refuse("role is not granted to the user");
            }
            Some(_) => {}
        },
        AuthOp::RoleAdd { name } if role_exists(name) => {
            return refuse("role name already exists");
        }
        AuthOp::RoleRemove { name } | AuthOp::RoleGrant { name, .. } if !role_exists(name) => {
            return refuse("role name not found");
        }
        AuthOp::RoleRevoke { name, prefix } => match state.roles.get(name) {
            None => return refuse("role name not found"),
            Some(grants) if !grants.iter().any(|grant| grant.prefix == *prefix) => {
                return refuse("permission is not granted to the role");
            }
            Some(_) => {}
        },
        _ => {}
    }
    Ok(())
}

/// The Aspen client an etcd user name names.
fn user_id(name: &str) -> Result<ClientId, Status> {
    if name.is_empty() {
        return Err(Status::invalid_argument("etcdserver: user name is empty"));
    }
    name.parse().map_err(|error| {
        Status::invalid_argument(format!(
            "user name {name:?} is not an Aspen client id (the endpoint id of the client's key, \
             as `aspen auth whoami` prints it): {error}"
        ))
    })
}

fn role_name(name: &str) -> Result<String, Status> {
    if name.is_empty() {
        return Err(Status::invalid_argument("etcdserver: role name is empty"));
    }
    Ok(name.to_string())
}

/// The prefix an etcd permission's range is: `[key, prefix end of key)`, or every key
/// (`"\0"` to `"\0"`, as `etcdctl --prefix ""` sends it). Aspen grants on prefixes only.
fn grant_prefix(key: &[u8], range_end: &[u8]) -> Result<Vec<u8>, Status> {
    let range = key_range(key, range_end);
    match !range_end.is_empty() && range == KeyRange::prefix(&range.start) {
        true => Ok(range.start),
        false => Err(Status::invalid_argument(format!(
            "Aspen grants permissions on key prefixes only (etcdctl --prefix): {:?} to {:?} is \
             not the range of a prefix",
            String::from_utf8_lossy(key),
            String::from_utf8_lossy(range_end)
        ))),
    }
}

/// A grant as etcd's permission: its prefix as a range.
fn permission(grant: &Grant) -> Permission {
    let (key, range_end) = match (grant.prefix.is_empty(), strinc(&grant.prefix)) {
        (true, _) => (vec![0], vec![0]),
        (false, Some(end)) => (grant.prefix.clone(), end),
        (false, None) => (grant.prefix.clone(), vec![0]),
    };
    Permission {
        perm_type: match grant.perm {
            Perm::Read => PermType::Read,
            Perm::ReadWrite => PermType::Readwrite,
        } as i32,
        key,
        range_end,
    }
}

#[tonic::async_trait]
impl<P: EtcdPort> Auth for Gateway<P> {
    /// Auth is on or off in each node's config (`auth.enabled`): enabling succeeds when it is
    /// on, and is refused otherwise.
    async fn auth_enable(
        &self,
        _request: Request<pb::AuthEnableRequest>,
    ) -> Result<Response<pb::AuthEnableResponse>, Status> {
        let (me, revision) = self.whoami().await?;
        if !me.auth_enabled {
            return Err(Status::failed_precondition(
                "auth is off in this node's config (auth.enabled = false); Aspen switches auth \
                 in each node's config, not at runtime",
            ));
        }
        Ok(Response::new(pb::AuthEnableResponse {
            header: self.local_header(revision),
        }))
    }

    async fn auth_disable(
        &self,
        _request: Request<pb::AuthDisableRequest>,
    ) -> Result<Response<pb::AuthDisableResponse>, Status> {
        let (me, revision) = self.whoami().await?;
        if me.auth_enabled {
            return Err(Status::failed_precondition(
                "auth is on in this node's config (auth.enabled = true); Aspen switches auth in \
                 each node's config, not at runtime",
            ));
        }
        Ok(Response::new(pb::AuthDisableResponse {
            header: self.local_header(revision),
        }))
    }

    async fn auth_status(
        &self,
        _request: Request<pb::AuthStatusRequest>,
    ) -> Result<Response<pb::AuthStatusResponse>, Status> {
        let (me, revision) = self.whoami().await?;
        Ok(Response::new(pb::AuthStatusResponse {
            header: self.local_header(revision),
            enabled: me.auth_enabled,
            auth_revision: 0,
        }))
    }

    async fn authenticate(
        &self,
        _request: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        Err(Status::invalid_argument(
            "etcdserver: authentication failed, invalid user ID or password (Aspen's etcd API \
             takes no passwords: every request acts as the client etcd.client_key names; \
             connect without a user)",
        ))
    }

    /// Lets the client named `name` in, with no roles. Aspen's clients have no password.
    async fn user_add(
        &self,
        request: Request<pb::AuthUserAddRequest>,
    ) -> Result<Response<pb::AuthUserAddResponse>, Status> {
        let request = request.into_inner();
        let id = user_id(&request.name)?;
        let no_password = request.options.is_some_and(|options| options.no_password);
        if !no_password || !request.password.is_empty() || !request.hashed_password.is_empty() {
            return Err(Status::invalid_argument(
                "Aspen's clients prove who they are with their key, not a password: add the \
                 user without one (etcdctl user add NAME --no-password)",
            ));
        }
        let (state, _) = self.auth_state().await?;
        if state.clients.contains_key(&id) {
            return Err(Status::failed_precondition(
                "etcdserver: user name already exists",
            ));
        }
        let header = self
            .auth_change(AuthOp::ClientAdd {
                id,
                roles: Vec::new(),
            })
            .await?;
        Ok(Response::new(pb::AuthUserAddResponse { header }))
    }

    async fn user_get(
        &self,
        request: Request<pb::AuthUserGetRequest>,
    ) -> Result<Response<pb::AuthUserGetResponse>, Status> {
        let id = user_id(&request.into_inner().name)?;
        let (state, header) = self.auth_state().await?;
        let Some(roles) = state.clients.get(&id) else {
            return Err(Status::failed_precondition(
                "etcdserver: user name not found",
            ));
        };
        Ok(Response::new(pb::AuthUserGetResponse {
            header,
            roles: roles.iter().cloned().collect(),
        }))
    }

    async fn user_list(
        &self,
        _request: Request<pb::AuthUserListRequest>,
    ) -> Result<Response<pb::AuthUserListResponse>, Status> {
        let (state, header) = self.auth_state().await?;
        let mut users: Vec<String> = state.clients.keys().map(ToString::to_string).collect();
        users.sort();
        Ok(Response::new(pb::AuthUserListResponse { header, users }))
    }

    async fn user_delete(
        &self,
        request: Request<pb::AuthUserDeleteRequest>,
    ) -> Result<Response<pb::AuthUserDeleteResponse>, Status> {
        let id = user_id(&request.into_inner().name)?;
        let header = self.auth_change(AuthOp::ClientRemove { id }).await?;
        Ok(Response::new(pb::AuthUserDeleteResponse { header }))
    }

    async fn user_change_password(
        &self,
        _request: Request<pb::AuthUserChangePasswordRequest>,
    ) -> Result<Response<pb::AuthUserChangePasswordResponse>, Status> {
        Err(Status::invalid_argument(
            "Aspen's clients have no password: they prove who they are with their key",
        ))
    }

    async fn user_grant_role(
        &self,
        request: Request<pb::AuthUserGrantRoleRequest>,
    ) -> Result<Response<pb::AuthUserGrantRoleResponse>, Status> {
        let request = request.into_inner();
        let id = user_id(&request.user)?;
        let role = role_name(&request.role)?;
        let header = self
            .auth_change(AuthOp::ClientAdd {
                id,
                roles: vec![role],
            })
            .await?;
        Ok(Response::new(pb::AuthUserGrantRoleResponse { header }))
    }

    async fn user_revoke_role(
        &self,
        request: Request<pb::AuthUserRevokeRoleRequest>,
    ) -> Result<Response<pb::AuthUserRevokeRoleResponse>, Status> {
        let request = request.into_inner();
        let id = user_id(&request.name)?;
        let role = role_name(&request.role)?;
        let header = self.auth_change(AuthOp::ClientRevoke { id, role }).await?;
        Ok(Response::new(pb::AuthUserRevokeRoleResponse { header }))
    }

    async fn role_add(
        &self,
        request: Request<pb::AuthRoleAddRequest>,
    ) -> Result<Response<pb::AuthRoleAddResponse>, Status> {
        let name = role_name(&request.into_inner().name)?;
        let header = self.auth_change(AuthOp::RoleAdd { name }).await?;
        Ok(Response::new(pb::AuthRoleAddResponse { header }))
    }

    /// The role's grants as etcd's permissions; `root` holds none (it may do everything).
    async fn role_get(
        &self,
        request: Request<pb::AuthRoleGetRequest>,
    ) -> Result<Response<pb::AuthRoleGetResponse>, Status> {
        let name = role_name(&request.into_inner().role)?;
        let (state, header) = self.auth_state().await?;
        let perm = match state.roles.get(&name) {
            Some(grants) => grants.iter().map(permission).collect(),
            None if name == ROOT_ROLE => Vec::new(),
            None => {
                return Err(Status::failed_precondition(
                    "etcdserver: role name not found",
                ));
            }
        };
        Ok(Response::new(pb::AuthRoleGetResponse { header, perm }))
    }

    async fn role_list(
        &self,
        _request: Request<pb::AuthRoleListRequest>,
    ) -> Result<Response<pb::AuthRoleListResponse>, Status> {
        let (state, header) = self.auth_state().await?;
        let mut roles: Vec<String> = state.roles.into_keys().collect();
        roles.push(ROOT_ROLE.into());
        roles.sort();
        Ok(Response::new(pb::AuthRoleListResponse { header, roles }))
    }

    async fn role_delete(
        &self,
        request: Request<pb::AuthRoleDeleteRequest>,
    ) -> Result<Response<pb::AuthRoleDeleteResponse>, Status> {
        let name = role_name(&request.into_inner().role)?;
        if name == ROOT_ROLE {
            // As etcd refuses deleting root while auth is on; Aspen's root is built in.
            return Err(Status::invalid_argument(
                "etcdserver: invalid auth management",
            ));
        }
        let header = self.auth_change(AuthOp::RoleRemove { name }).await?;
        Ok(Response::new(pb::AuthRoleDeleteResponse { header }))
    }

    async fn role_grant_permission(
        &self,
        request: Request<pb::AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<pb::AuthRoleGrantPermissionResponse>, Status> {
        let request = request.into_inner();
        let name = role_name(&request.name)?;
        let Some(permission) = request.perm else {
            return Err(Status::invalid_argument("etcdserver: permission not given"));
        };
        let perm = match PermType::try_from(permission.perm_type) {
            Ok(PermType::Read) => Perm::Read,
            Ok(PermType::Readwrite) => Perm::ReadWrite,
            Ok(PermType::Write) | Err(_) => {
                return Err(Status::invalid_argument(
                    "Aspen grants read or readwrite, not write alone",
                ));
            }
        };
        let prefix = grant_prefix(&permission.key, &permission.range_end)?;
        let header = self
            .auth_change(AuthOp::RoleGrant {
                name,
                grant: Grant { prefix, perm },
            })
            .await?;
        Ok(Response::new(pb::AuthRoleGrantPermissionResponse {
            header,
        }))
    }

    async fn role_revoke_permission(
        &self,
        request: Request<pb::AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<pb::AuthRoleRevokePermissionResponse>, Status> {
        let request = request.into_inner();
        let name = role_name(&request.role)?;
        let prefix = grant_prefix(&request.key, &request.range_end)?;
        let header = self
            .auth_change(AuthOp::RoleRevoke { name, prefix })
            .await?;
        Ok(Response::new(pb::AuthRoleRevokePermissionResponse {
            header,
        }))
    }
}
