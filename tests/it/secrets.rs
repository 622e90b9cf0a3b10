//! Secrets in URLs, through the real binary: RPC provider keys (in an RPC URL's path, query or
//! userinfo) and database passwords (in the userinfo, a query parameter or a libpq key=value
//! string) never reach stdout, stderr (logs at every level, error lines) or `/metrics`.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use depositd_core::wallet::HdWallet;
use depositd_testkit::anvil::{Anvil, AnvilOptions, free_port};
use secrecy::ExposeSecret;

use crate::helpers::depositd;

/// Where the keys hide: userinfo password, path segment, query parameter.
const KEYS: [&str; 3] = ["UserinfoKey7f3a", "PathKey91bd", "QueryKey2c44"];

fn keyed(scheme: &str, port: u16) -> String {
    format!("{scheme}://apiuser:{}@127.0.0.1:{port}/v2/{}?apikey={}", KEYS[0], KEYS[1], KEYS[2])
}

fn assert_no_key(what: &str, text: &str) {
    for key in KEYS {
        let at = text.find(key);
        assert!(
            at.is_none(),
            "{what} shows the RPC key {key}: ...{}...",
            at.map(|i| &text[i.saturating_sub(200)..(i + 100).min(text.len())]).unwrap_or_default()
        );
    }
}

fn text(output: &Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// A JSON-RPC proxy that answers on any path (hosted providers' `/v2/<key>`) by forwarding to
/// anvil's `/`.
async fn any_path_proxy(upstream: String) -> u16 {
    let client = reqwest::Client::new();
    let handler = move |body: axum::body::Bytes| {
        let (client, upstream) = (client.clone(), upstream.clone());
        async move {
            let answer =
                client.post(&upstream).header("content-type", "application/json").body(body).send().await.unwrap();
            ([("content-type", "application/json")], answer.bytes().await.unwrap())
        }
    };
    let app = axum::Router::new().fallback(axum::routing::post(handler));
    depositd_testkit::http::serve(app).await.port()
}

/// A configuration on SQLite with one chain, `keyed`, whose RPC URLs come from
/// `KEYED_RPC_URLS` (so each run can order them) and whose WebSocket URL is a dead keyed one.
fn write_config(dir: &Path, ws_port: u16, api_port: u16) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("chains")).unwrap();
    std::fs::write(
        dir.join("chains/keyed.toml"),
        format!(
            "name = \"keyed\"\nchain_id = 31337\nrpc_urls = [\"http://unused.invalid\"]\n\
             rpc_urls_env = \"KEYED_RPC_URLS\"\nws_url = \"{}\"\nconfirmations = 1\nblock_time_ms = 1000\n\
             poll_interval_ms = 200\nmax_block_range = 1000\nrpc_timeout_ms = 1000\nstart_block = 0\n\
             testnet = true\n\n[native]\nsymbol = \"ETH\"\ndecimals = 18\n",
            keyed("ws", ws_port)
        ),
    )
    .unwrap();
    let config = dir.join("depositd.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\nurl = \"sqlite://{}/depositd.db\"\n\n[api]\nlisten = \"127.0.0.1:{api_port}\"\n\n\
             [chains]\ndir = \"{}\"\nenabled = [\"keyed\"]\ndefault_chain = \"keyed\"\ndefault_asset = \"ETH\"\n\n\
             [wallet]\nmnemonic = \"{}\"\n",
            dir.display(),
            dir.join("chains").display(),
            HdWallet::generate_mnemonic().expose_secret()
        ),
    )
    .unwrap();
    config
}

/// Runs the daemon for a few seconds of RPC traffic (including a failover away from a dead
/// keyed endpoint), reads `/metrics`, stops it with SIGTERM and returns everything it printed.
async fn run_daemon(config: &Path, rpc_urls: &str, api_port: u16, rust_log: Option<&str>) -> (String, String) {
    let dir = config.parent().unwrap();
    let (out, err) = (dir.join("stdout.log"), dir.join("stderr.log"));
    let mut command = depositd();
    command
        .arg("--config")
        .arg(config)
        .arg("run")
        .env("KEYED_RPC_URLS", rpc_urls)
        .stdout(Stdio::from(std::fs::File::create(&out).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&err).unwrap()));
    match rust_log {
        Some(filter) => command.env("RUST_LOG", filter),
        None => command.env_remove("RUST_LOG"),
    };
    let mut child = crate::cli::Daemon(command.spawn().unwrap());
    let metrics_url = format!("http://127.0.0.1:{api_port}/metrics");
    let deadline = Instant::now() + Duration::from_secs(60);
    let client = reqwest::Client::new();
    loop {
        assert!(child.0.try_wait().unwrap().is_none(), "the daemon exited: {}", std::fs::read_to_string(&err).unwrap());
        if let Ok(response) = client.get(&metrics_url).send().await
            && response.status() == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "the daemon did not start");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The watcher's steps: head, blocks, logs, against the live endpoint after failing over.
    let mut metrics = String::new();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        metrics = client.get(&metrics_url).send().await.unwrap().text().await.unwrap();
        if metrics.lines().any(|l| l.starts_with("depositd_rpc_requests_total") && l.contains("result=\"ok\"")) {
            break;
        }
    }
    assert!(metrics.contains("depositd_rpc_failovers_total{chain=\"keyed\"}"), "no failover happened:\n{metrics}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.0.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let _ = child.0.wait();
    let printed = format!("{}\n{}", std::fs::read_to_string(&out).unwrap(), std::fs::read_to_string(&err).unwrap());
    (printed, metrics)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_keys_never_reach_logs_errors_metrics_or_check_config() {
    let anvil = Anvil::spawn(AnvilOptions { block_time: Some(1), ..AnvilOptions::default() }).await.unwrap();
    let proxy = any_path_proxy(anvil.rpc_url()).await;
    let (dead, dead_ws) = (free_port().unwrap(), free_port().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let api_port = free_port().unwrap();
    let config = write_config(dir.path(), dead_ws, api_port);
    // A dead keyed endpoint first (every call starts with an error and a failover), then the live one.
    let urls = format!("{},{}", keyed("http", dead), keyed("http", proxy));

    for rust_log in [Some("trace"), Some("debug"), None] {
        let (printed, metrics) = run_daemon(&config, &urls, api_port, rust_log).await;
        let what = format!("`depositd run` with RUST_LOG={rust_log:?}");
        assert_no_key(&what, &printed);
        assert_no_key(&format!("/metrics under {what}"), &metrics);
        // The URLs are still named, as scheme and host: the failover says from where to where.
        assert!(printed.contains(&format!("http://127.0.0.1:{dead}/…")), "{what}:\n{printed}");
        if rust_log == Some("trace") {
            // The transport's own logging was on: what is asserted above is not silence.
            assert!(printed.contains("alloy_transport_http"), "{what} logged no RPC transport lines");
            assert!(printed.contains("TRACE"), "{what} logged nothing at trace");
        }
    }

    // check-config, offline and online: against the dead endpoint (an error line) and the live one.
    let check = |urls: String, offline: bool| {
        let mut command: Command = depositd();
        command.arg("--config").arg(&config).arg("check-config").env("KEYED_RPC_URLS", urls).env("RUST_LOG", "trace");
        if offline {
            command.arg("--offline");
        }
        command.output().unwrap()
    };
    let output = check(urls.clone(), true);
    assert!(output.status.success(), "{}", text(&output));
    assert_no_key("check-config --offline", &text(&output));
    assert!(text(&output).contains(&format!("http://127.0.0.1:{dead}/…")), "{}", text(&output));

    let output = check(urls.clone(), false);
    assert!(!output.status.success(), "{}", text(&output));
    assert_no_key("check-config against a dead RPC", &text(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains(&format!("http://127.0.0.1:{dead}/…")));

    let output = check(keyed("http", proxy), false);
    assert!(output.status.success(), "{}", text(&output));
    assert_no_key("check-config against a live RPC", &text(&output));
    assert!(text(&output).contains(&format!("verified against http://127.0.0.1:{proxy}/…")), "{}", text(&output));
}

/// `check-config`, `migrate` and `run` with passwords outside `user:pass@` (a query parameter, a
/// libpq key=value string): refused or unreachable, the password is never printed.
#[test]
fn database_passwords_in_queries_and_key_value_strings_are_redacted() {
    const PASSWORD: &str = "DbSecret5e1d";
    let urls = [
        format!("postgres://app@127.0.0.1:1/depositd?sslmode=disable&password={PASSWORD}"),
        format!("postgresql://app:{PASSWORD}@127.0.0.1:1/depositd?password={PASSWORD}"),
        format!("host=127.0.0.1 port=1 user=app password={PASSWORD} dbname=depositd"),
        format!("host=127.0.0.1 port=1 password = '{PASSWORD} with spaces' dbname=depositd"),
    ];
    let mnemonic = HdWallet::generate_mnemonic();
    for url in &urls {
        let runs: [(&str, Vec<&str>); 4] = [
            ("check-config", vec!["check-config", "--offline"]),
            ("migrate", vec!["migrate"]),
            ("run", vec!["run", "--only", "api"]),
            ("merchant list", vec!["merchant", "list"]),
        ];
        for (name, args) in runs {
            for via_env in [false, true] {
                let mut command = depositd();
                if via_env {
                    command.env("DATABASE_URL", url);
                } else {
                    command.arg("--database-url").arg(url);
                }
                let output = command
                    .args(&args)
                    .env("DEPOSITD__WALLET__MNEMONIC", mnemonic.expose_secret())
                    .env("DEPOSITD__API__LISTEN", "127.0.0.1:0")
                    .env("RUST_LOG", "trace")
                    .output()
                    .unwrap();
                let all = text(&output);
                assert!(!all.contains(PASSWORD), "`{name}` with {url:?} (env: {via_env}) printed the password:\n{all}");
                // Each says what it could: the URL, with the password as ***.
                if url.contains("://") && name != "check-config" {
                    assert!(!output.status.success(), "{all}");
                    assert!(all.contains("127.0.0.1:1/depositd"), "`{name}` does not name the database:\n{all}");
                }
                if url.contains("://") && name == "check-config" {
                    assert!(output.status.success(), "{all}");
                    assert!(all.contains("password=***"), "{all}");
                }
                if !url.contains("://") {
                    assert!(!output.status.success(), "{all}");
                    assert!(all.contains("password=***"), "`{name}` with {url:?}:\n{all}");
                }
            }
        }
    }
}
