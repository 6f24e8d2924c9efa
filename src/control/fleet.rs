//! Fleet mode's control side: the commands other nodes send this one (kick one of its
//! connections, list them), and the connection ids that name their node (`<node>-<n>`).

use std::sync::Arc;

use tokio::sync::mpsc;

use super::revoke;
use crate::auth::unix_now;
use crate::session::index::{ConnectionInfo, Sessions};
use crate::store::admission::ConnId;
use crate::store::fleet::revocation::{Command, RedisRevocations};

/// What a connection id given to the admin API names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnRef {
    /// A connection of this node.
    Local(ConnId),
    /// A connection of another node.
    Remote {
        /// The owner.
        node: String,
        /// Its number there.
        id: ConnId,
    },
}

/// Read `text` (`<n>`, or `<node>-<n>` in fleet mode); `None` when it is neither.
pub fn parse_conn_id(text: &str, this_node: Option<&str>) -> Option<ConnRef> {
    let number = |s: &str| if s.bytes().all(|b| b.is_ascii_digit()) { s.parse::<ConnId>().ok() } else { None };
    if let Some(id) = number(text) {
        return Some(ConnRef::Local(id));
    }
    let this = this_node?;
    let (node, n) = text.rsplit_once('-')?;
    let id = number(n)?;
    if node.is_empty() {
        return None;
    }
    Some(if node == this { ConnRef::Local(id) } else { ConnRef::Remote { node: node.to_string(), id } })
}

/// One node's page of connections as JSON, ids written `<node>-<n>`.
pub fn page_json(node: &str, rows: Vec<ConnectionInfo>, next: Option<ConnId>) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = rows
        .into_iter()
        .map(|r| {
            let id = format!("{node}-{}", r.id);
            let mut v = serde_json::to_value(r).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("id".into(), id.into());
            }
            v
        })
        .collect();
    serde_json::json!({"node": node, "connections": rows, "next": next})
}

/// Answer the commands other nodes send this one, on the current runtime.
pub fn serve(store: Arc<RedisRevocations>, sessions: Arc<Sessions>, mut commands: mpsc::UnboundedReceiver<Command>) {
    actix_web::rt::spawn(async move {
        while let Some(c) = commands.recv().await {
            let (reply, body) = match c {
                Command::Kick { id, reply } => {
                    let found = revoke::kick(&sessions, id);
                    (reply, if found { "1".to_string() } else { "0".to_string() })
                }
                Command::List { limit, after, reply } => {
                    let (rows, next) = sessions.page(after, limit.clamp(1, 1000), unix_now());
                    (reply, page_json(store.node(), rows, next).to_string())
                }
            };
            if let Err(e) = store.answer(&reply, body).await {
                tracing::warn!(error = %e, "fleet command answer failed");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_ids_name_their_node() {
        assert_eq!(parse_conn_id("42", None), Some(ConnRef::Local(42)));
        assert_eq!(parse_conn_id("gw-a.1f2e-42", None), None, "single node: numbers only");
        assert_eq!(parse_conn_id("gw-a.1f2e-42", Some("gw-a.1f2e")), Some(ConnRef::Local(42)));
        assert_eq!(
            parse_conn_id("gw-b.99-7", Some("gw-a.1f2e")),
            Some(ConnRef::Remote { node: "gw-b.99".into(), id: 7 })
        );
        for bad in ["", "-", "-7", "a-", "a-b", "a-18446744073709551616", "a-+5", "a- 5"] {
            assert_eq!(parse_conn_id(bad, Some("x")), None, "{bad:?}");
        }
        for bad in ["+5", " 5", "5 "] {
            assert_eq!(parse_conn_id(bad, Some("x")), None, "{bad:?}");
        }
    }
}
