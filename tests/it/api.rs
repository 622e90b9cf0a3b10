//! The HTTP application's health endpoints and error contract, over real HTTP, on both backends.

use crate::helpers::{TestApp, TestDb, both_backends};

both_backends!(health_and_readiness, unknown_routes_get_a_json_error);

async fn health_and_readiness(db: TestDb) {
    use depositd_core::store::cursors::{self, ChainCursor};
    use depositd_testkit::anvil::{Anvil, AnvilOptions, free_port};

    let port = free_port().unwrap();
    let chain = Anvil::spawn(AnvilOptions { port, ..Default::default() }).await.unwrap();
    let app =
        TestApp::spawn_with(&db, |c| c.chains[0].rpc_urls = vec![format!("http://127.0.0.1:{port}").into()]).await;
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let body: serde_json::Value = health.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    let readiness = || async {
        let response = app.client.get(app.url("/readyz")).send().await.unwrap();
        (response.status().as_u16(), response.json::<serde_json::Value>().await.unwrap())
    };
    let check = |body: &serde_json::Value, name: &str| {
        body["checks"].as_array().unwrap().iter().find(|c| c["name"] == name).cloned().unwrap()
    };

    // The watcher has not recorded a block yet: not ready, and the body says why.
    let (status, body) = readiness().await;
    assert_eq!((status, &body["ready"]), (503, &serde_json::json!(false)));
    assert_eq!(check(&body, "database")["ok"], true);
    assert_eq!(check(&body, "migrations")["ok"], true);
    assert_eq!(check(&body, "chain:anvil")["detail"], "the watcher has not processed a block yet");

    let mut conn = app.store.conn().await.unwrap();
    cursors::set(&mut conn, &ChainCursor { chain_id: 31337, block_number: 0, block_hash: "0x0".into() }).await.unwrap();
    drop(conn);
    let (status, body) = readiness().await;
    assert_eq!((status, &body["ready"]), (200, &serde_json::json!(true)), "{body}");

    // The RPC stops: unready, naming the chain. It comes back: ready again.
    chain.shutdown().await;
    let (status, body) = readiness().await;
    assert_eq!(status, 503);
    assert_eq!(check(&body, "chain:anvil")["detail"], "the RPC endpoint does not answer");
    let chain = Anvil::spawn(AnvilOptions { port, ..Default::default() }).await.unwrap();
    let (status, _) = readiness().await;
    assert_eq!(status, 200);
    chain.shutdown().await;

    // With the database gone, the process is alive but not ready, and says which check failed.
    app.store.close().await;
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let (status, body) = readiness().await;
    assert_eq!(status, 503);
    assert_eq!(check(&body, "database")["ok"], false);
}

async fn unknown_routes_get_a_json_error(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let response = app.client.get(app.url("/api/v1/nothing-here")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "route_not_found");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(body["error"]["message"].is_string());
}
