//! Small HTTP servers on loopback for tests: a JSON-RPC proxy that misbehaves on purpose, a
//! price feed, anything an axum router can answer.

use std::net::SocketAddr;

/// Serves `app` on a free port of 127.0.0.1 for as long as the runtime runs; returns its address.
pub async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port on 127.0.0.1");
    let addr = listener.local_addr().expect("the listener's address");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("the test server runs") });
    addr
}
