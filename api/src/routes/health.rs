//! `GET /healthz` (the process answers) and `GET /readyz` (it can do its job).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use crate::state::AppState;

#[derive(Serialize)]
pub struct Health {
    status: &'static str,
    version: &'static str,
}

pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok", version: env!("CARGO_PKG_VERSION") })
}

#[derive(Serialize)]
pub struct Readiness {
    ready: bool,
    checks: Vec<Check>,
}

#[derive(Serialize)]
pub struct Check {
    name: String,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

/// Ready when the database answers, every migration is applied, and each chain's RPC answers
/// with its watcher at most `api.ready_max_lag_blocks` behind the head.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let mut checks = Vec::new();
    let database = state.store.ping().await;
    checks.push(Check {
        name: "database".into(),
        ok: database.is_ok(),
        detail: database.err().map(|_| "the database does not answer".into()),
    });
    let migrations = state.store.migrations_current().await;
    checks.push(Check {
        name: "migrations".into(),
        ok: matches!(migrations, Ok(true)),
        detail: match migrations {
            Ok(true) => None,
            Ok(false) => Some("pending migrations: run `depositd migrate`".into()),
            Err(_) => Some("cannot read the migrations table".into()),
        },
    });
    for (chain, rpc) in state.chain_rpcs.iter() {
        checks.push(chain_check(&state, chain, rpc).await);
    }
    let ready = checks.iter().all(|c| c.ok);
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(Readiness { ready, checks }))
}

/// `GET /metrics`: the Prometheus text exposition.
pub async fn metrics(State(state): State<AppState>) -> impl axum::response::IntoResponse {
    // Invoice counts are read from the store, at most one count at a time and never long waited
    // for (see `crate::invoice_counts`).
    state.invoice_counts.refresh(&state.store, &state.metrics).await;
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render())
}

async fn chain_check(
    state: &AppState,
    chain: &depositd_core::config::ChainConfig,
    rpc: &alloy::providers::DynProvider,
) -> Check {
    use alloy::providers::Provider;
    let name = format!("chain:{}", chain.name);
    let head = tokio::time::timeout(std::time::Duration::from_secs(3), rpc.get_block_number()).await;
    let head = match head {
        Ok(Ok(head)) => head,
        _ => return Check { name, ok: false, detail: Some("the RPC endpoint does not answer".into()) },
    };
    let cursor = match state.store.conn().await {
        Ok(mut conn) => depositd_core::store::cursors::get(&mut conn, chain.chain_id).await.ok().flatten(),
        Err(_) => None,
    };
    let Some(cursor) = cursor else {
        return Check { name, ok: false, detail: Some("the watcher has not processed a block yet".into()) };
    };
    let lag = head.saturating_sub(cursor.block_number);
    let limit = state.config.settings.api.ready_max_lag_blocks;
    if lag > limit {
        return Check {
            name,
            ok: false,
            detail: Some(format!("the watcher is {lag} blocks behind the head (limit {limit})")),
        };
    }
    Check { name, ok: true, detail: None }
}
