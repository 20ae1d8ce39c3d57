//! `Clients`: `GET /api/clients` answers CLIENT LIST as JSON; on a cluster,
//! of every master, each entry with its `node`.

use super::{Endpoint, Function, HttpMethod, Trigger};
use crate::error::AppError;
use crate::functions::AppState;
use axum::extract::State;
use axum::Json;
use serde_json::{json, Map, Value};

/// `Clients`: `GET /api/clients`.
pub(crate) const FUNCTION: Function = Function {
    name: "Clients",
    trigger: Trigger::Http {
        route: "clients",
        endpoints: &[Endpoint {
            method: HttpMethod::Get,
            handler: |on| axum::routing::on(on, clients),
        }],
        also: &[],
    },
};

/// Parses CLIENT LIST output: one client per line, `name=value` fields.
pub(crate) fn parse_client_list(text: &str) -> Vec<Map<String, Value>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            line.split(' ')
                .filter_map(|field| field.split_once('='))
                .map(|(k, v)| (k.to_owned(), Value::String(v.to_owned())))
                .collect()
        })
        .collect()
}

/// Runs CLIENT LIST on the shared connection, or on each master's of a
/// cluster (in slot order), adding the master's address as `node`. One
/// master failing fails the call: a partial list would read as complete.
pub(crate) async fn list(state: &AppState) -> Result<Vec<Map<String, Value>>, AppError> {
    let cmd = redis::cmd("CLIENT").arg("LIST").to_owned();
    let Some(shards) = state.cache().shards().await? else {
        let text: String = state.cache().query(&cmd).await?;
        return Ok(parse_client_list(&text));
    };
    let lists = futures_util::future::join_all(
        shards
            .iter()
            .map(|shard| state.cache().query_node::<String>(&shard.node, &cmd)),
    )
    .await;
    let mut clients = Vec::new();
    for (shard, text) in shards.iter().zip(lists) {
        for mut client in parse_client_list(&text?) {
            client.insert("node".into(), Value::String(shard.node.clone()));
            clients.push(client);
        }
    }
    Ok(clients)
}

/// `GET /api/clients`: the cache's `CLIENT LIST`, on every master of a
/// cluster.
pub(crate) async fn clients(axum::extract::State(state): State<AppState>) -> Result<Json<Value>, AppError> {
    Ok(Json(json!({ "clients": list(&state).await? })))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real CLIENT LIST lines (Redis 7) parse into one object per client.
    #[test]
    fn parses_client_list() {
        let text = "id=3 addr=127.0.0.1:50000 laddr=127.0.0.1:6380 fd=8 name= age=5 idle=0 flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 qbuf=26 qbuf-free=20448 argv-mem=10 multi-mem=0 rbs=1024 rbp=0 obl=0 oll=0 omem=0 tot-mem=22298 events=r cmd=client|list user=8d6f lib-name=redis-rs lib-ver=1.8.1 resp=2\r\nid=4 addr=127.0.0.1:50002 laddr=127.0.0.1:6380 fd=9 name=admin cmd=ping user=default\n";
        let clients = parse_client_list(text);
        assert_eq!(clients.len(), 2);
        assert_eq!(clients[0]["id"], "3");
        assert_eq!(clients[0]["addr"], "127.0.0.1:50000");
        assert_eq!(clients[0]["name"], "");
        assert_eq!(clients[0]["cmd"], "client|list");
        assert_eq!(clients[0]["resp"], "2");
        assert_eq!(clients[1]["name"], "admin");
    }
}
