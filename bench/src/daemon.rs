//! A run directory (the daemon's configuration file, its chain file, the mnemonic in a file only
//! this user can read) and the real `depositd` binary started from it, as an operator would.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use depositd_core::config::Config;
use depositd_core::secret::DatabaseUrl;
use depositd_core::wallet::HdWallet;
use depositd_testkit::anvil::free_port;
use secrecy::ExposeSecret;

use crate::Global;

/// The `depositd` binary: `--depositd-bin`, or the one next to this harness, built first by cargo
/// in the harness's own profile (a no-op when it is up to date).
pub fn depositd_binary(global: &Global) -> anyhow::Result<PathBuf> {
    if let Some(path) = &global.depositd_bin {
        anyhow::ensure!(path.is_file(), "--depositd-bin {} does not exist", path.display());
        return Ok(path.clone());
    }
    let release = !cfg!(debug_assertions);
    eprintln!("building the depositd binary (cargo build{} --bin depositd)", if release { " --release" } else { "" });
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    command.args(["build", "--bin", "depositd"]);
    if release {
        command.arg("--release");
    }
    let status = command.status().context("running cargo to build depositd")?;
    anyhow::ensure!(status.success(), "cargo build --bin depositd failed");
    let exe = std::env::current_exe()?;
    let binary = exe.parent().context("the harness's directory")?.join("depositd");
    anyhow::ensure!(binary.is_file(), "{} was not built", binary.display());
    Ok(binary)
}

/// Settings beyond the harness's base configuration: (section, key, TOML value).
pub type Extra<'a> = &'a [(&'a str, &'a str, String)];

/// A directory holding one daemon's configuration.
pub struct RunDir {
    dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub port: u16,
}

impl RunDir {
    /// Writes `chains/anvil.toml`, a fresh mnemonic (mode 0600) and `depositd.toml`: the database,
    /// the API on a free port with rate limits out of the way, USDC as the default asset,
    /// webhooks to a localhost receiver allowed, plus `extra`.
    pub fn new(db: &DatabaseUrl, chain_file: &str, extra: Extra) -> anyhow::Result<RunDir> {
        let dir = tempfile::Builder::new().prefix("depositd-bench-run-").tempdir()?;
        let chains = dir.path().join("chains");
        std::fs::create_dir(&chains)?;
        std::fs::write(chains.join("anvil.toml"), chain_file)?;
        let mnemonic_path = dir.path().join("mnemonic");
        write_private(&mnemonic_path, HdWallet::generate_mnemonic().expose_secret())?;
        let port = free_port()?;
        let quoted = |s: &str| toml_string(s);
        let mut sections: BTreeMap<&str, Vec<(&str, String)>> = BTreeMap::new();
        let mut set = |section: &'static str, key: &'static str, value: String| {
            sections.entry(section).or_default().push((key, value));
        };
        set("database", "url", quoted(db.expose()));
        set("api", "listen", quoted(&format!("127.0.0.1:{port}")));
        set("api", "public_url", quoted(&format!("http://127.0.0.1:{port}")));
        // The per-key limit would otherwise cap the load benchmark at 100 requests/s.
        set("api", "rate_limit_per_second", "1000000".into());
        set("api", "rate_limit_burst", "1000000".into());
        set("chains", "dir", quoted(&chains.display().to_string()));
        set("chains", "enabled", "[\"anvil\"]".into());
        set("chains", "default_chain", quoted("anvil"));
        set("chains", "default_asset", quoted("USDC"));
        set("wallet", "mnemonic_file", quoted(&mnemonic_path.display().to_string()));
        set("webhooks", "allow_http", "true".into());
        set("webhooks", "allow_private_targets", "true".into());
        set("invoices", "allow_http_urls", "true".into());
        let mut text = String::from("# Written by depositd-bench for one run.\n");
        let mut extra_sections: BTreeMap<&str, Vec<(&str, String)>> = BTreeMap::new();
        for (section, key, value) in extra {
            extra_sections.entry(section).or_default().push((key, value.clone()));
        }
        let names: std::collections::BTreeSet<&str> = sections.keys().chain(extra_sections.keys()).copied().collect();
        for name in names {
            text.push_str(&format!("\n[{name}]\n"));
            let mut keys: BTreeMap<&str, String> = BTreeMap::new();
            for (key, value) in
                sections.get(name).into_iter().flatten().chain(extra_sections.get(name).into_iter().flatten())
            {
                keys.insert(key, value.clone());
            }
            for (key, value) in keys {
                text.push_str(&format!("{key} = {value}\n"));
            }
        }
        let config_path = dir.path().join("depositd.toml");
        write_private(&config_path, &text)?;
        Ok(RunDir { dir, config_path, port })
    }

    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The configuration as the daemon loads it (for in-process components).
    pub fn config(&self) -> anyhow::Result<Config> {
        Ok(Config::load(Some(&self.config_path), None)?)
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Keeps the directory (and the daemon's log) after the run, for `--verbose`.
    pub fn keep(self) -> PathBuf {
        self.dir.keep()
    }
}

fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().create_new(true).write(true).mode(0o600).open(path)?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// A running `depositd --config FILE run`, its logs in the run directory.
pub struct Daemon {
    child: tokio::process::Child,
    pub pid: u32,
    pub started: Instant,
    pub api_url: String,
    pub log_path: PathBuf,
}

impl Daemon {
    /// Starts the daemon with `only` components (all when empty) and returns at once.
    pub fn spawn(binary: &Path, run: &RunDir, only: &[&str]) -> anyhow::Result<Daemon> {
        let log_path = run.path().join("depositd.log");
        let log = std::fs::File::create(&log_path)?;
        let mut command = tokio::process::Command::new(binary);
        command.arg("--config").arg(&run.config_path).arg("run");
        if !only.is_empty() {
            command.arg("--only").arg(only.join(","));
        }
        command.env_remove("DATABASE_URL").env("NO_COLOR", "1");
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("DEPOSITD__") {
                command.env_remove(key);
            }
        }
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "info");
        }
        command.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).kill_on_drop(true);
        let started = Instant::now();
        let child = command.spawn().with_context(|| format!("starting {}", binary.display()))?;
        let pid = child.id().context("the daemon's pid")?;
        Ok(Daemon { child, pid, started, api_url: run.api_url(), log_path })
    }

    /// Waits until `GET /healthz` answers; returns the time since the spawn.
    pub async fn wait_healthy(&mut self, timeout: Duration) -> anyhow::Result<Duration> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("depositd exited at start ({status}); its log:\n{}", self.log_tail());
            }
            let probe =
                client.get(format!("{}/healthz", self.api_url)).timeout(Duration::from_millis(500)).send().await;
            if probe.is_ok_and(|r| r.status().is_success()) {
                return Ok(self.started.elapsed());
            }
            if Instant::now() > deadline {
                bail!("depositd did not answer /healthz within {timeout:?}; its log:\n{}", self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// SIGTERM, then SIGKILL after 20 s.
    pub async fn stop(mut self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid as i32), nix::sys::signal::Signal::SIGTERM);
        if tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
}

/// The value of an unlabelled or labelled sample in a Prometheus text exposition, e.g.
/// `depositd_chain_processed_block{chain="anvil"}`.
pub fn metric(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}
