//! What an outside probe of the API found (issue 17), against the real server: slow and idle
//! clients, exact JSON numbers and duplicate keys, undecodable path ids, throttled failed
//! authentication, and `callback_url`s aimed at internal addresses.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use depositd_core::api_key::Scope;
use depositd_core::config::Config;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestDb, assert_error, both_backends};

both_backends!(
    json_numbers_are_exact_and_keys_unique,
    undecodable_path_ids_get_the_json_error_on_every_id_route,
    failed_authentication_is_throttled_by_client_address,
    internal_callback_urls_are_refused_at_creation,
    queries_and_urls_are_as_strict_as_the_document,
);

/// Slow-client limits small enough to watch them work.
fn quick_timeouts(config: &mut Config) {
    config.settings.api.header_read_timeout_secs = 2;
    config.settings.api.body_read_timeout_secs = 2;
    config.settings.api.idle_timeout_secs = 2;
}

/// Reads until the server closes the connection (or `limit` passes); returns what it sent and
/// how long that took.
fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let started = Instant::now();
    stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break, // reset
        }
        assert!(started.elapsed() < limit, "the server kept the connection open for {limit:?}");
    }
    (String::from_utf8_lossy(&received).into_owned(), started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_are_cut_off() {
    let db = TestDb::sqlite();
    let app = TestApp::spawn_with(&db, quick_timeouts).await;
    let addr = app.addr;
    tokio::task::spawn_blocking(move || {
        // Headers one line a second, never finished: closed by the header-read timeout.
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").unwrap();
        let started = Instant::now();
        let mut closed = false;
        for i in 0..10 {
            std::thread::sleep(Duration::from_secs(1));
            if stream.write_all(format!("X-Slow-{i}: still coming\r\n").as_bytes()).is_err() {
                closed = true;
                break;
            }
        }
        let (received, _) = read_until_closed(&mut stream, Duration::from_secs(10));
        assert!(closed || started.elapsed() < Duration::from_secs(12), "headers dribbled for {:?}", started.elapsed());
        assert!(!received.contains("200 OK"), "a request whose head never finished was answered: {received}");
        assert!(started.elapsed() < Duration::from_secs(6), "cut off after {:?}", started.elapsed());

        // An idle socket that never sends a byte.
        let mut stream = TcpStream::connect(addr).unwrap();
        let (received, took) = read_until_closed(&mut stream, Duration::from_secs(8));
        assert!(received.is_empty(), "{received}");
        assert!(took >= Duration::from_millis(1500), "closed too early: {took:?}");

        // A kept-alive connection after its response.
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let (received, took) = read_until_closed(&mut stream, Duration::from_secs(8));
        assert!(received.starts_with("HTTP/1.1 200"), "{received}");
        assert!(took >= Duration::from_millis(1500), "closed too early: {took:?}");

        // A body that stops short: a JSON 408 and the connection closed.
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .write_all(
                b"POST /api/v1/invoices HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                  Content-Length: 100\r\nx-api-key: dk_test_nope\r\n\r\n{\"amount\":",
            )
            .unwrap();
        let (received, took) = read_until_closed(&mut stream, Duration::from_secs(8));
        assert!(received.starts_with("HTTP/1.1 408"), "{received}");
        let body = &received[received.find("\r\n\r\n").unwrap() + 4..];
        let body: Value = serde_json::from_str(body.trim()).unwrap_or_else(|_| {
            // A chunked body: the JSON is between the chunk sizes.
            serde_json::from_str(body.lines().nth(1).unwrap_or_default()).unwrap()
        });
        assert_eq!(body["error"]["code"], "request_timeout", "{body}");
        assert!(took >= Duration::from_millis(1500) && took < Duration::from_secs(6), "{took:?}");
    })
    .await
    .unwrap();
    // Those were the slow ones; everyone else is served.
    assert_eq!(app.client.get(app.url("/healthz")).send().await.unwrap().status(), 200);
}

/// The real binary under a 256-file limit: 300 idle sockets neither exhaust its descriptors nor
/// keep `/healthz` from answering.
#[test]
fn idle_sockets_cannot_exhaust_the_file_limit() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let port = depositd_testkit::anvil::free_port().unwrap();
    let stderr = dir.path().join("stderr.log");
    let mut command = crate::helpers::depositd();
    command
        .arg("--database-url")
        .arg(format!("sqlite://{}/depositd.db", dir.path().display()))
        .args(["run", "--only", "api"])
        .env("DEPOSITD__API__LISTEN", format!("127.0.0.1:{port}"))
        .env("DEPOSITD__API__IDLE_TIMEOUT_SECS", "2")
        .env("DEPOSITD__API__HEADER_READ_TIMEOUT_SECS", "3")
        .env("DEPOSITD__WALLET__MNEMONIC", "test test test test test test test test test test test junk")
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(&stderr).unwrap());
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, 256, 256)
                .map_err(std::io::Error::from)
        });
    }
    let _daemon = crate::cli::Daemon(command.spawn().unwrap());
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let healthz = |timeout: Duration| -> Option<String> {
        let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
        stream.set_read_timeout(Some(timeout)).unwrap();
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        Some(response)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while healthz(Duration::from_secs(1)).is_none() {
        assert!(Instant::now() < deadline, "the daemon did not start: {}", std::fs::read_to_string(&stderr).unwrap());
        std::thread::sleep(Duration::from_millis(100));
    }

    let idle: Vec<TcpStream> = (0..300).map(|_| TcpStream::connect(addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let response = healthz(Duration::from_secs(15));
    let response = response.unwrap_or_else(|| {
        panic!(
            "/healthz did not answer within 15 s with 300 idle sockets open: {}",
            std::fs::read_to_string(&stderr).unwrap()
        )
    });
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(started.elapsed() < Duration::from_secs(10), "/healthz took {:?}", started.elapsed());
    drop(idle);
    let logs = std::fs::read_to_string(&stderr).unwrap();
    assert!(!logs.contains("Too many open files"), "{logs}");
    assert!(logs.contains("api.max_connections lowered to fit the open-file limit"), "{logs}");
}

async fn post_raw(app: &TestApp, key: &str, path: &str, body: &str) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .header("x-api-key", key)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

async fn json_numbers_are_exact_and_keys_unique(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (_, key) = app.merchant("Exact Shop", &Scope::ALL).await;

    // 18 decimal places, more than an f64 holds: kept to the last digit.
    let response = post_raw(&app, &key, "/api/v1/invoices", r#"{"amount": 12.345678901234567891}"#).await;
    assert_eq!(response.status(), 201);
    let invoice: Value = response.json().await.unwrap();
    assert_eq!(invoice["amount"], "12.345678901234567891", "{invoice}");
    let response = post_raw(&app, &key, "/api/v1/invoices", r#"{"amount": 19.99}"#).await;
    let invoice: Value = response.json().await.unwrap();
    assert_eq!(invoice["amount"], "19.99", "{invoice}");

    // The same Idempotency-Key with an amount one f64 rounding away is another request, not a
    // replay of the first invoice; the same text again is the replay.
    let keyed = |amount: &'static str| {
        app.client
            .post(app.url("/api/v1/invoices"))
            .header("x-api-key", &key)
            .header("Idempotency-Key", "exact-1")
            .header("content-type", "application/json")
            .body(format!(r#"{{"amount": {amount}}}"#))
            .send()
    };
    let first: Value = keyed("12.345678901234567891").await.unwrap().json().await.unwrap();
    let again: Value = keyed("12.345678901234567891").await.unwrap().json().await.unwrap();
    assert_eq!(first["id"], again["id"], "{again}");
    assert_error(keyed("12.345678901234567892").await.unwrap(), 409, "idempotency_conflict", Some("Idempotency-Key"))
        .await;

    // 19 places: refused, not rounded to 0.12345678901234568.
    let response = post_raw(&app, &key, "/api/v1/invoices", r#"{"amount": 0.1234567890123456789}"#).await;
    let body = assert_error(response, 400, "invalid_amount", Some("amount")).await;
    assert!(body["error"]["message"].as_str().unwrap().contains("decimal places"), "{body}");

    for exponent in ["1e2", "1E2", "1.5e1", "100e-1"] {
        let response = post_raw(&app, &key, "/api/v1/invoices", &format!(r#"{{"amount": {exponent}}}"#)).await;
        let body = assert_error(response, 400, "invalid_number", Some("amount")).await;
        assert!(body["error"]["message"].as_str().unwrap().contains("exponent"), "{body}");
    }
    let response = post_raw(&app, &key, "/api/v1/invoices", r#"{"amount": "5", "expires_in": 6e4}"#).await;
    assert_error(response, 400, "invalid_number", Some("expires_in")).await;

    // Duplicated keys, at the top and inside objects, on every kind of body.
    let response = post_raw(&app, &key, "/api/v1/invoices", r#"{"amount": "5", "amount": "500"}"#).await;
    let body = assert_error(response, 400, "duplicate_key", Some("amount")).await;
    assert!(body["error"]["message"].as_str().unwrap().contains("more than once"), "{body}");
    let response =
        post_raw(&app, &key, "/api/v1/invoices", r#"{"amount": "5", "metadata": {"order": 1, "order": 2}}"#).await;
    assert_error(response, 400, "duplicate_key", Some("metadata.order")).await;
    let response =
        post_raw(&app, &key, "/api/v1/static-addresses", r#"{"customer_id": "c1", "customer_id": "c2"}"#).await;
    assert_error(response, 400, "duplicate_key", Some("customer_id")).await;
    let response = post_raw(
        &app,
        &key,
        "/api/v1/webhook-endpoints",
        r#"{"url": "https://a.example/h", "url": "https://b.example/h"}"#,
    )
    .await;
    assert_error(response, 400, "duplicate_key", Some("url")).await;
    let response = post_raw(
        &app,
        &key,
        "/api/v1/payouts",
        r#"{"asset": "USDC", "amount": "1", "amount": "1000", "destination": "0x0"}"#,
    )
    .await;
    assert_error(response, 400, "duplicate_key", Some("amount")).await;

    // Nothing of the refused requests was created.
    let (_, list) = app.get_json(&key, "/api/v1/invoices").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 3, "{list}");
}

/// Every `{...}` route of the OpenAPI document (and the router's undocumented ones), with a
/// segment that decodes to invalid UTF-8.
async fn undecodable_path_ids_get_the_json_error_on_every_id_route(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (_, key) = app.merchant("Path Shop", &Scope::ALL).await;
    let document: Value = app.client.get(app.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    let mut routes: Vec<(String, String)> = Vec::new();
    for (path, operations) in document["paths"].as_object().unwrap() {
        if !path.contains('{') {
            continue;
        }
        for method in operations.as_object().unwrap().keys() {
            routes.push((method.to_uppercase(), path.clone()));
        }
    }
    assert!(routes.len() >= 16, "the document lists the id routes: {routes:?}");
    for extra in ["/checkout/{id}", "/checkout/assets/{name}"] {
        routes.push(("GET".into(), extra.into()));
    }
    for (method, template) in routes {
        let mut path = String::new();
        let mut param = String::new();
        let mut rest = template.as_str();
        while let Some(open) = rest.find('{') {
            let close = rest.find('}').unwrap();
            path.push_str(&rest[..open]);
            path.push_str("%ff");
            param = rest[open + 1..close].to_owned();
            rest = &rest[close + 1..];
        }
        path.push_str(rest);
        let response = app
            .client
            .request(method.parse().unwrap(), app.url(&path))
            .header("x-api-key", &key)
            .header("x-session-token", "t")
            .header("x-signature", "s")
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(content_type.starts_with("application/json"), "{method} {path}: {content_type}");
        let body = assert_error(response, 400, "invalid_parameter", Some(&param)).await;
        assert!(!body["error"]["message"].as_str().unwrap().contains('\u{fffd}'), "{body}");
    }
}

async fn failed_authentication_is_throttled_by_client_address(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (_, key) = app.merchant("Throttled Shop", &Scope::ALL).await;
    let unknown = || {
        let hex = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        format!("dk_test_{}", &hex[..48])
    };
    let mut tasks = Vec::new();
    for _ in 0..300 {
        let (client, url, presented) = (app.client.clone(), app.url("/api/v1/invoices"), unknown());
        tasks.push(tokio::spawn(async move { client.get(url).header("x-api-key", presented).send().await.unwrap() }));
    }
    let (mut unauthorized, mut throttled) = (0, 0);
    for task in tasks {
        let response = task.await.unwrap();
        match response.status().as_u16() {
            401 => unauthorized += 1,
            429 => {
                throttled += 1;
                let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
                assert!(retry_after >= 1);
                assert_error(response, 429, "rate_limited", None).await;
            }
            other => panic!("unexpected {other}"),
        }
    }
    eprintln!("300 unknown keys: {unauthorized} x 401, {throttled} x 429");
    // At most four times the allowance (30) in flight at once from an address with no failures.
    assert!(unauthorized <= 150 && throttled >= 150, "{unauthorized} x 401, {throttled} x 429");

    // The same address is refused even with a good key until Retry-After; another is not.
    let response = app.client.get(app.url("/api/v1/invoices")).header("x-api-key", &key).send().await.unwrap();
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    let other =
        reqwest::Client::builder().local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap()).build().unwrap();
    let response = other.get(app.url("/api/v1/invoices")).header("x-api-key", &key).send().await.unwrap();
    assert_eq!(response.status(), 200, "another address is not throttled");
    assert!(retry_after <= 3, "one failure's worth of waiting at 30 a minute: {retry_after} s");
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let response = app.client.get(app.url("/api/v1/invoices")).header("x-api-key", &key).send().await.unwrap();
    assert_eq!(response.status(), 200, "after Retry-After the address is served again");
}

async fn internal_callback_urls_are_refused_at_creation(db: TestDb) {
    let app = TestApp::spawn_with(&db, |c| c.settings.invoices.allow_http_urls = true).await;
    let (_, key) = app.merchant("Callback Shop", &Scope::ALL).await;
    for url in [
        "http://127.0.0.1:9/callback",
        "http://localhost:9/callback",
        "https://169.254.169.254/latest/meta-data",
        "http://[::1]/callback",
        "http://10.0.0.1/callback",
        "http://[::ffff:127.0.0.1]/callback",
    ] {
        let response = app.create_invoice(&key, json!({"amount": "5", "callback_url": url})).await;
        let body = assert_error(response, 400, "url_not_allowed", Some("callback_url")).await;
        assert!(body["error"]["message"].as_str().unwrap().contains("public addresses"), "{body}");
        let response = app.create_static_address(&key, json!({"customer_id": "c", "callback_url": url})).await;
        assert_error(response, 400, "url_not_allowed", Some("callback_url")).await;
    }
    // The same switch that lets deliveries reach private targets lets them be set.
    let app = TestApp::spawn_with(&db, |c| {
        c.settings.invoices.allow_http_urls = true;
        c.settings.webhooks.allow_private_targets = true;
    })
    .await;
    let (_, key) = app.merchant("Dev Shop", &Scope::ALL).await;
    let response = app.create_invoice(&key, json!({"amount": "5", "callback_url": "http://127.0.0.1:9/cb"})).await;
    assert_eq!(response.status(), 201);
    let response =
        app.create_static_address(&key, json!({"customer_id": "c", "callback_url": "http://localhost:9/cb"})).await;
    assert_eq!(response.status(), 201);
}

/// What the OpenAPI document states and schemathesis holds the server to: a query parameter once,
/// a query that decodes, a URL of printable ASCII with a real host name, a whole number written
/// `60000.0`, a ledger asset that exists.
async fn queries_and_urls_are_as_strict_as_the_document(db: TestDb) {
    let app = TestApp::spawn_with(&db, |c| c.settings.invoices.allow_http_urls = true).await;
    let (_, key) = app.merchant("Strict Shop", &Scope::ALL).await;
    let get = |path: &str| app.client.get(app.url(path)).header("x-api-key", &key).send();
    assert_error(get("/api/v1/invoices?limit=1&limit=2").await.unwrap(), 400, "duplicate_parameter", Some("limit"))
        .await;
    assert_error(get("/api/v1/ledger?asset=USDC&asset=ETH").await.unwrap(), 400, "duplicate_parameter", Some("asset"))
        .await;
    let response = get("/api/v1/invoices?customer_id=%ff").await.unwrap();
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    assert_error(response, 400, "invalid_parameter", None).await;
    assert_error(get("/api/v1/ledger?asset=nope").await.unwrap(), 400, "unsupported_asset", Some("asset")).await;
    assert_eq!(get("/api/v1/ledger?asset=USDC").await.unwrap().status(), 200);

    for url in ["https://shop.example/a b", "https://shop.example/caf\u{e9}", "https://a*/x", "https://shop.1x/"] {
        let response = app.create_invoice(&key, json!({"amount": "5", "success_url": url})).await;
        assert_error(response, 400, "invalid_url", Some("success_url")).await;
    }
    let response = app
        .create_invoice(
            &key,
            json!({"amount": "5", "success_url": "https://Shop.example:8443/done?o=1#x", "expires_in": 60000.0}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let response = post_raw(&app, &key, "/api/v1/invoices", r#"{"amount": "5", "expires_in": 60000.5}"#).await;
    assert_error(response, 400, "invalid_parameter", Some("expires_in")).await;
}
