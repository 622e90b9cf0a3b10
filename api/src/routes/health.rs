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

/// Ready when the database answers and every migration is applied. (Chain RPC checks join this
/// list with the watcher.)
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
    let ready = checks.iter().all(|c| c.ok);
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(Readiness { ready, checks }))
}

/// `GET /metrics`: the Prometheus text exposition.
pub async fn metrics(State(state): State<AppState>) -> impl axum::response::IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render())
}
