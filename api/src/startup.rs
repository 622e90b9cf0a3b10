//! Building and serving the HTTP application.
//!
//! Connections are served by hyper's HTTP/1 server directly (axum's `serve` has no timeouts), so
//! that a slow or idle client cannot hold a connection, and with it a file descriptor, for ever:
//! - the request head must arrive within `api.header_read_timeout_secs` (hyper's own timer, which
//!   starts when the connection begins to wait for a request, new or kept alive);
//! - the body within `api.body_read_timeout_secs` of the head (408 otherwise);
//! - a connection with no request in flight that sends nothing for `api.idle_timeout_secs` is
//!   closed;
//! - at most `api.max_connections` are served at once (lowered to fit the open-file limit):
//!   further clients wait in the listen queue instead of the accept loop failing with "too many
//!   open files" and taking everyone down.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::state::AppState;
use crate::{extract, routes};

/// File descriptors kept for everything but API connections: the database pool, RPC and webhook
/// clients, SQLite's files, logs.
const RESERVED_FDS: u64 = 64;

/// The API server, bound but not yet serving, so the caller can learn the port first
/// (tests bind port 0).
pub struct Application {
    listener: TcpListener,
    state: AppState,
}

/// The slow-client limits, from `api.*`.
#[derive(Debug, Clone, Copy)]
struct Limits {
    header_read: Duration,
    body_read: Duration,
    idle: Duration,
    max_connections: usize,
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
        let api = &self.state.config.settings.api;
        let limits = Limits {
            header_read: Duration::from_secs(api.header_read_timeout_secs),
            body_read: Duration::from_secs(api.body_read_timeout_secs),
            idle: Duration::from_secs(api.idle_timeout_secs),
            max_connections: connection_cap(
                api.max_connections as usize,
                self.state.config.settings.database.max_connections,
            ),
        };
        let app = routes::router(self.state)
            .layer(axum::middleware::from_fn_with_state(limits.body_read, read_body_in_time))
            .layer(TraceLayer::new_for_http().make_span_with(request_span));
        tracing::info!(addr = %self.listener.local_addr()?, max_connections = limits.max_connections, "API listening");
        let permits = Arc::new(Semaphore::new(limits.max_connections));
        let mut last_accept_error: Option<Instant> = None;
        loop {
            // A permit first: at the cap, new clients wait in the kernel's listen queue.
            let permit = tokio::select! {
                _ = shutdown.cancelled() => break,
                permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            };
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = self.listener.accept() => accepted,
            };
            let (stream, remote) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE and the like: wait for descriptors to be freed rather than spin.
                    if last_accept_error.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
                        tracing::warn!(%error, "cannot accept a connection");
                        last_accept_error = Some(Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(serve_connection(stream, remote, app.clone(), limits, shutdown.clone(), permit));
        }
        // Every connection holds a permit until it is done: having them all back means the
        // in-flight requests have finished.
        let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
        let _ = permits.acquire_many(all).await;
        Ok(())
    }
}

/// `max_connections`, lowered so that connections plus everything else fit `RLIMIT_NOFILE`.
fn connection_cap(configured: usize, database_connections: u32) -> usize {
    let soft = match nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE) {
        Ok((soft, _)) => soft,
        Err(_) => return configured,
    };
    let reserve = RESERVED_FDS + u64::from(database_connections);
    let fits = soft.saturating_sub(reserve).max(soft / 4).max(1);
    let cap = configured.min(usize::try_from(fits).unwrap_or(usize::MAX));
    if cap < configured {
        tracing::info!(
            configured,
            cap,
            open_file_limit = soft,
            "api.max_connections lowered to fit the open-file limit"
        );
    }
    cap
}

/// When a connection last read anything, and how many of its requests are in flight.
struct Activity {
    started: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn touch(&self) {
        self.last_ms.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        Some(self.started.elapsed().saturating_sub(last))
    }
}

/// A request in flight on its connection, until dropped.
struct Busy(Arc<Activity>);

impl Busy {
    fn new(activity: Arc<Activity>) -> Busy {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The TCP stream, noting every read that brings bytes (what "sends nothing" is measured by).
struct Tracked {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

async fn serve_connection(
    stream: TcpStream,
    remote: SocketAddr,
    app: Router,
    limits: Limits,
    shutdown: CancellationToken,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    let activity =
        Arc::new(Activity { started: Instant::now(), last_ms: AtomicU64::new(0), in_flight: AtomicUsize::new(0) });
    let io = TokioIo::new(Tracked { stream, activity: activity.clone() });
    let service = hyper::service::service_fn({
        let activity = activity.clone();
        move |request: hyper::Request<hyper::body::Incoming>| {
            let (app, busy) = (app.clone(), Busy::new(activity.clone()));
            async move {
                let mut request = request.map(axum::body::Body::new);
                request.extensions_mut().insert(ConnectInfo(remote));
                let response = app.oneshot(request).await;
                drop(busy);
                response
            }
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let mut check = tokio::time::interval((limits.idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(1)));
    let mut closing = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%remote, %error, "connection ended with an error");
                }
                break;
            }
            _ = shutdown.cancelled(), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
            _ = check.tick(), if !closing => {
                if activity.idle_for().is_some_and(|idle| idle >= limits.idle) {
                    tracing::debug!(%remote, "closing an idle connection");
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Reads the whole request body within `limit` (and at most [`extract::MAX_BODY_BYTES`]) before
/// the handler runs: a body that stops short is a 408 that closes the connection.
async fn read_body_in_time(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    match tokio::time::timeout(limit, axum::body::to_bytes(body, extract::MAX_BODY_BYTES)).await {
        Ok(Ok(bytes)) => next.run(Request::from_parts(parts, axum::body::Body::from(bytes))).await,
        Ok(Err(error)) => {
            let too_large = std::error::Error::source(&error)
                .is_some_and(|source| source.is::<http_body_util::LengthLimitError>())
                || error.to_string().contains("length limit exceeded");
            if too_large {
                ApiError::PayloadTooLarge { limit: extract::MAX_BODY_BYTES }.into_response()
            } else {
                let mut response = ApiError::InvalidRequest {
                    code: "invalid_body",
                    message: "the request body could not be read".into(),
                    param: None,
                }
                .into_response();
                response.headers_mut().insert(axum::http::header::CONNECTION, "close".parse().expect("a header value"));
                response
            }
        }
        Err(_) => {
            let mut response = ApiError::RequestTimeout { seconds: limit.as_secs() }.into_response();
            response.headers_mut().insert(axum::http::header::CONNECTION, "close".parse().expect("a header value"));
            response
        }
    }
}

/// The span of one request: its method and its route's template (`/dashboard/invite/{token}`),
/// never the path as sent nor its query, which may carry a secret (an invite token).
fn request_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let route = match request.extensions().get::<axum::extract::MatchedPath>() {
        Some(matched) => matched.as_str().to_owned(),
        None => redacted_path(request.uri().path()),
    };
    tracing::debug_span!("request", method = %request.method(), route = %route, version = ?request.version())
}

/// A path no route matched, with the segment after `/dashboard/invite/` hidden.
fn redacted_path(path: &str) -> String {
    match path.strip_prefix("/dashboard/invite/") {
        Some(_) => "/dashboard/invite/{token}".to_owned(),
        None => path.to_owned(),
    }
}

#[cfg(test)]
mod span_tests {
    use super::*;

    #[test]
    fn invite_tokens_stay_out_of_request_spans() {
        assert_eq!(redacted_path("/dashboard/invite/abc123"), "/dashboard/invite/{token}");
        assert_eq!(redacted_path("/dashboard/login"), "/dashboard/login");
    }
}
