//! `aspen auth whoami | list | client add|revoke|remove | role add|remove|grant|revoke`.

use serde_json::json;

use crate::api::{AuthOp, ClientId, Grant};
use crate::cli::output::Answer;
use crate::cli::{AuthClientCommand, AuthCommand, AuthRoleCommand};
use crate::client::Client;

pub(super) async fn auth(client: &Client, command: &AuthCommand) -> Result<Answer, String> {
    let e = |e: crate::client::Error| e.to_string();
    let change = match command {
        AuthCommand::Whoami => {
            let me = client.whoami().await.map_err(e)?;
            let text = match (me.auth_enabled, me.known) {
                (false, _) => format!("{} (this node does not check permissions)", me.id),
                (true, false) => format!("{} (not known to the cluster)", me.id),
                (true, true) => format!("{} roles: {}", me.id, me.roles.join(", ")),
            };
            let json = json!({"id": me.id.to_string(), "roles": me.roles, "known": me.known,
                "auth_enabled": me.auth_enabled});
            return Ok(Answer::new(text, json));
        }
        AuthCommand::List => {
            let state = client.auth_list().await.map_err(e)?;
            let mut text = String::from("clients:\n");
            for (id, roles) in &state.clients {
                let roles: Vec<&str> = roles.iter().map(String::as_str).collect();
                text.push_str(&format!("  {id}  {}\n", roles.join(", ")));
            }
            text.push_str("roles:\n");
            for (name, grants) in &state.roles {
                let grants: Vec<String> = grants.iter().map(grant_text).collect();
                text.push_str(&format!("  {name}  {}\n", grants.join(", ")));
            }
            let json = json!({
                "clients": state.clients.iter()
                    .map(|(id, roles)| json!({"id": id.to_string(), "roles": roles}))
                    .collect::<Vec<_>>(),
                "roles": state.roles.iter()
                    .map(|(name, grants)| json!({"name": name, "grants": grants.iter()
                        .map(|g| json!({"prefix": String::from_utf8_lossy(&g.prefix),
                            "perm": g.perm.name()}))
                        .collect::<Vec<_>>()}))
                    .collect::<Vec<_>>(),
            });
            return Ok(Answer::new(text, json));
        }
        AuthCommand::Client(AuthClientCommand::Add { id, roles }) => AuthOp::ClientAdd {
            id: client_id(id)?,
            roles: roles.clone(),
        },
        AuthCommand::Client(AuthClientCommand::Revoke { id, role }) => AuthOp::ClientRevoke {
            id: client_id(id)?,
            role: role.clone(),
        },
        AuthCommand::Client(AuthClientCommand::Remove { id }) => {
            AuthOp::ClientRemove { id: client_id(id)? }
        }
        AuthCommand::Role(AuthRoleCommand::Add { name }) => AuthOp::RoleAdd { name: name.clone() },
        AuthCommand::Role(AuthRoleCommand::Remove { name }) => {
            AuthOp::RoleRemove { name: name.clone() }
        }
        AuthCommand::Role(AuthRoleCommand::Grant { name, prefix, perm }) => AuthOp::RoleGrant {
            name: name.clone(),
            grant: Grant {
                prefix: prefix.as_bytes().to_vec(),
                perm: *perm,
            },
        },
        AuthCommand::Role(AuthRoleCommand::Revoke { name, prefix }) => AuthOp::RoleRevoke {
            name: name.clone(),
            prefix: prefix.as_bytes().to_vec(),
        },
    };
    client.auth(change).await.map_err(e)?;
    Ok(Answer::ok(json!({"ok": true})))
}

fn client_id(text: &str) -> Result<ClientId, String> {
    text.trim()
        .parse()
        .map_err(|e| format!("client id {text:?}: {e} (ids come from `aspen auth whoami`)"))
}

fn grant_text(grant: &Grant) -> String {
    format!(
        "{} on {:?}",
        grant.perm.name(),
        String::from_utf8_lossy(&grant.prefix)
    )
}
