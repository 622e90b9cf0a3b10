//! A webhook receiver on 127.0.0.1: records every request it gets (with the moment it arrived),
//! answers as scripted, and wakes whoever waits for a delivery. Stopped when dropped.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio::sync::Notify;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Hit {
    pub path: String,
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
    pub body: String,
    /// When the request reached the receiver (before its body was read).
    pub at: SystemTime,
}

impl Hit {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn event(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_default()
    }

    /// The event's `type`; panics when the body is not an event.
    pub fn event_type(&self) -> String {
        self.event()["type"].as_str().expect("a webhook body with a type").to_owned()
    }
}

#[derive(Clone, Default)]
struct ReceiverState {
    hits: Arc<Mutex<Vec<Hit>>>,
    /// Statuses to answer next (then 200). `/gone` always answers 410, `/redirect` 302.
    script: Arc<Mutex<VecDeque<u16>>>,
    /// Woken at every hit.
    arrived: Arc<Notify>,
}

/// A webhook receiver on 127.0.0.1.
pub struct Receiver {
    addr: SocketAddr,
    state: ReceiverState,
    _shutdown: tokio_util::sync::DropGuard,
}

async fn receive(State(state): State<ReceiverState>, request: Request) -> Response {
    let at = SystemTime::now();
    let path = request.uri().path().to_owned();
    let headers = request
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    let body = axum::body::to_bytes(request.into_body(), 1 << 20).await.unwrap_or_default();
    let body = String::from_utf8_lossy(&body).into_owned();
    state.hits.lock().expect("receiver state").push(Hit { path: path.clone(), headers, body, at });
    state.arrived.notify_waiters();
    match path.as_str() {
        "/gone" => StatusCode::GONE.into_response(),
        "/redirect" => (StatusCode::FOUND, [("location", "/landing")]).into_response(),
        _ => {
            let status = state.script.lock().expect("receiver state").pop_front().unwrap_or(200);
            (StatusCode::from_u16(status).expect("a scripted status"), "receiver says hello").into_response()
        }
    }
}

impl Receiver {
    /// A receiver on a free port.
    pub async fn start() -> Receiver {
        Self::start_on(0).await
    }

    /// A receiver on `port` (0: any free port).
    pub async fn start_on(port: u16) -> Receiver {
        Self::bind(port).await.unwrap_or_else(|e| panic!("the webhook receiver cannot listen on port {port}: {e}"))
    }

    /// A receiver on `port` (0: any free port), or why it cannot listen there.
    pub async fn bind(port: u16) -> std::io::Result<Receiver> {
        let state = ReceiverState::default();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let token = tokio_util::sync::CancellationToken::new();
        let app = axum::Router::new().fallback(receive).with_state(state.clone());
        let stop = token.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await;
        });
        Ok(Receiver { addr, state, _shutdown: token.drop_guard() })
    }

    /// The receiver's URL for `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request so far, in the order they arrived.
    pub fn hits(&self) -> Vec<Hit> {
        self.state.hits.lock().expect("receiver state").clone()
    }

    /// Answers the next requests (other than to `/gone` and `/redirect`) with `statuses`, then 200.
    pub fn script(&self, statuses: &[u16]) {
        self.state.script.lock().expect("receiver state").extend(statuses);
    }

    /// Waits until `done` holds for the hits so far; false if it still does not after `timeout`.
    pub async fn wait_until(&self, timeout: Duration, mut done: impl FnMut(&[Hit]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let arrived = self.state.arrived.notified();
            if done(&self.state.hits.lock().expect("receiver state")) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            // `arrived` was created before the check, so a hit after the check wakes it.
            let _ = tokio::time::timeout(left.min(Duration::from_millis(200)), arrived).await;
        }
    }
}
