//! Building and serving the HTTP application.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

use crate::routes;
use crate::state::AppState;

/// The API server, bound but not yet serving, so the caller can learn the port first
/// (tests bind port 0).
pub struct Application {
    listener: TcpListener,
    state: AppState,
}

impl Application {
    pub async fn build(state: AppState, listen: SocketAddr) -> std::io::Result<Application> {
        let listener = TcpListener::bind(listen).await?;
        Ok(Application { listener, state })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound TCP listener has a local address")
    }

    /// Serves until `shutdown` is cancelled, then finishes in-flight requests and returns.
    pub async fn run(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let app = routes::router(self.state).layer(TraceLayer::new_for_http());
        tracing::info!(addr = %self.listener.local_addr()?, "API listening");
        axum::serve(self.listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
    }
}
