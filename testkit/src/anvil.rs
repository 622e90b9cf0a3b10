//! Running a local anvil (for `depositd dev`, the integration tests and the benchmarks), and the
//! JSON-RPC call for anvil's own methods (`anvil_mine`, `evm_setAutomine`, ...).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

/// The well-known private key of anvil's account 0 (from the public test mnemonic
/// "test test ... junk"). It holds value only on local dev chains.
pub const DEV_ACCOUNT_0_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
/// anvil's account 1: the dev payer.
pub const DEV_ACCOUNT_1_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";

const INSTALL_HINT: &str = "install it with `npm install` in the repository root (it pins @foundry-rs/anvil), \
    or point ANVIL_BIN at an anvil binary";

/// Finds the anvil binary: `ANVIL_BIN`, then `./node_modules/.bin/anvil`, then `PATH`.
pub fn locate() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("ANVIL_BIN") {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok(path);
        }
        bail!("ANVIL_BIN={} does not exist; {INSTALL_HINT}", path.display());
    }
    // The npm package installs the real binary as an optional per-platform package, and a Node
    // shim as .bin/anvil. Run the binary itself: a signal sent to the shim (kill on drop, SIGTERM
    // to save state) would not reach the chain, which would outlive us.
    if let Ok(packages) = std::fs::read_dir("node_modules/@foundry-rs") {
        let mut binaries: Vec<PathBuf> = packages
            .flatten()
            .filter(|entry| entry.file_name().to_string_lossy().starts_with("anvil-"))
            .map(|entry| entry.path().join("bin").join("anvil"))
            .filter(|binary| binary.is_file())
            .collect();
        binaries.sort();
        if let Some(binary) = binaries.into_iter().next() {
            return Ok(binary);
        }
    }
    let local = Path::new("node_modules/.bin/anvil");
    if local.is_file() {
        return Ok(local.to_path_buf());
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("anvil");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    bail!(
        "anvil not found (looked at $ANVIL_BIN, ./node_modules/@foundry-rs/anvil-*/bin/anvil, ./node_modules/.bin/anvil \
         and $PATH); {INSTALL_HINT}"
    )
}

/// How to start anvil.
#[derive(Debug, Clone, Default)]
pub struct AnvilOptions {
    /// 0 = any free port.
    pub port: u16,
    /// Seconds between blocks; `None` = mine each transaction at once (automine).
    pub block_time: Option<u64>,
    /// Load the chain from this file at start and write it back periodically and on exit.
    pub state_file: Option<PathBuf>,
    /// The chain id; `None` = 31337 (anvil's own default).
    pub chain_id: Option<u64>,
}

/// A running anvil, killed when dropped.
pub struct Anvil {
    child: Child,
    port: u16,
}

impl Anvil {
    pub async fn spawn(options: AnvilOptions) -> anyhow::Result<Anvil> {
        let binary = locate()?;
        let port = if options.port == 0 { free_port()? } else { options.port };
        let mut command = Command::new(&binary);
        let chain_id = options.chain_id.unwrap_or(31337).to_string();
        command.args(["--host", "127.0.0.1", "--port", &port.to_string(), "--chain-id", &chain_id]);
        if let Some(seconds) = options.block_time {
            command.args(["--block-time", &seconds.to_string()]);
        }
        if let Some(state) = &options.state_file {
            command.arg("--state").arg(state).args(["--state-interval", "5"]);
        }
        command.stdout(Stdio::null()).stderr(Stdio::piped()).stdin(Stdio::null()).kill_on_drop(true);
        let mut child = command.spawn().with_context(|| format!("cannot start {}", binary.display()))?;
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = reqwest::Client::new();
        loop {
            if let Some(status) = child.try_wait()? {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr).await;
                }
                bail!("anvil exited at start ({status}): {}", stderr.trim());
            }
            let probe = client
                .post(&url)
                .json(&serde_json::json!({"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}))
                .timeout(Duration::from_secs(1))
                .send()
                .await;
            if probe.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            if Instant::now() > deadline {
                bail!("anvil did not answer on {url} within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Anvil { child, port })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn rpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// Stops anvil with SIGTERM so it writes its state file, then waits for it (SIGKILL after 10 s).
    pub async fn shutdown(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
}

/// One JSON-RPC call to the node at `url`; an error answer is an error.
pub async fn call(url: &str, method: &str, params: serde_json::Value) -> anyhow::Result<serde_json::Value> {
    let mut answer: serde_json::Value = reqwest::Client::new()
        .post(url)
        .json(&serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
        .send()
        .await
        .with_context(|| format!("{method}: no answer from {url}"))?
        .json()
        .await
        .with_context(|| format!("{method}: the answer is not JSON"))?;
    if let Some(error) = answer.get("error") {
        bail!("{method}: {error}");
    }
    Ok(answer["result"].take())
}

/// Asks the OS for a free TCP port on the loopback interface.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `preferred` when it is free, otherwise any free port.
pub fn preferred_or_free_port(preferred: u16) -> anyhow::Result<u16> {
    match std::net::TcpListener::bind(("127.0.0.1", preferred)) {
        Ok(listener) => Ok(listener.local_addr()?.port()),
        Err(_) => free_port(),
    }
}
