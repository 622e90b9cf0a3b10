//! The real `depositd` executable: configuration and start-up errors are one clear line with a
//! non-zero exit; secrets never reach the output.

use std::process::Output;

use crate::helpers::{TestDb, depositd};

fn stderr_lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stderr).lines().filter(|l| !l.trim().is_empty()).map(str::to_owned).collect()
}

/// Asserts a failed run printed exactly one `error: ...` line containing `needle`.
fn assert_one_line_error(output: &Output, needle: &str) {
    assert!(!output.status.success(), "expected failure, got {:?}", output.status);
    let lines = stderr_lines(output);
    assert_eq!(lines.len(), 1, "expected one line of error, got {lines:#?}");
    assert!(lines[0].starts_with("error: "), "{lines:?}");
    assert!(lines[0].contains(needle), "{:?} does not mention {needle:?}", lines[0]);
}

#[test]
fn a_missing_config_file_is_one_clear_error() {
    let output =
        depositd().args(["--config", "/nonexistent/depositd.toml", "check-config", "--offline"]).output().unwrap();
    assert_one_line_error(&output, "/nonexistent/depositd.toml does not exist");
}

#[test]
fn a_bad_config_file_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[api]\nlisten = \"not an address\"\n", "api.listen"),
        ("[api]\nlistn = \"127.0.0.1:1\"\n", "unknown field `listn`"),
        ("[pricing.static_usd_rates]\nEUR = 1.08\n", "write exact decimals as strings"),
        ("[chains]\nenabled = [\"no-such-chain\"]\n", "no-such-chain.toml"),
        ("[invoices]\nmin_amount = \"0\"\n", "invoices.min_amount"),
        ("this is not toml", "cannot read configuration"),
    ];
    for (contents, needle) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, contents).unwrap();
        let output = depositd().arg("--config").arg(&path).args(["check-config", "--offline"]).output().unwrap();
        assert_one_line_error(&output, needle);
    }
}

#[test]
fn environment_variables_override_and_typos_are_caught() {
    let output =
        depositd().env("DEPOSITD__API__LISTEN", "0.0.0.0:9999").args(["check-config", "--offline"]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("listen 0.0.0.0:9999"));

    let output =
        depositd().env("DEPOSITD__API__LISTN", "0.0.0.0:9999").args(["check-config", "--offline"]).output().unwrap();
    assert_one_line_error(&output, "unknown field `listn`");
}

#[test]
fn bad_database_urls_are_one_clear_error_without_the_password() {
    let output = depositd().args(["--database-url", "mysql://root:pw@127.0.0.1/x", "migrate"]).output().unwrap();
    assert_one_line_error(&output, "unsupported scheme `mysql`");

    // Nothing listens on port 1: unreachable. The password must not be echoed.
    let output =
        depositd().args(["--database-url", "postgres://app:hunter2secret@127.0.0.1:1/db", "migrate"]).output().unwrap();
    assert_one_line_error(
        &output,
        "cannot connect to the database at postgres://app:***@127.0.0.1:1/db: error communicating with database: Connection refused",
    );
    assert!(!String::from_utf8_lossy(&output.stderr).contains("hunter2secret"));

    let output = depositd().env("DATABASE_URL", "sqlite:///proc/nope/depositd.db").arg("migrate").output().unwrap();
    assert_one_line_error(&output, "/proc/nope");
}

#[test]
fn a_missing_anvil_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let output =
        depositd().env("ANVIL_BIN", "/nonexistent/anvil").args(["dev", "--data-dir"]).arg(dir.path()).output().unwrap();
    assert_one_line_error(&output, "npm install");
}

#[test]
fn the_mnemonic_never_reaches_the_output() {
    let phrase = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";
    let output =
        depositd().env("DEPOSITD__WALLET__MNEMONIC", phrase).args(["check-config", "--offline"]).output().unwrap();
    assert!(output.status.success());
    let all = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(all.contains("mnemonic configured"));
    assert!(!all.contains("abandon"), "{all}");
}

#[test]
fn smtp_settings_are_checked_and_the_password_never_reaches_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[smtp]\nhost = \"\"\nfrom = \"a@shop.example\"\n", "smtp.host"),
        ("[smtp]\nhost = \"mail.example\"\nfrom = \"not an address\"\n", "smtp.from"),
        ("[smtp]\nhost = \"mail.example\"\nfrom = \"a@shop.example\"\nusername = \"u\"\n", "give both or neither"),
        ("[smtp]\nhost = \"mail.example\"\nfrom = \"a@shop.example\"\ntls = \"ssl\"\n", "ssl"),
        (
            "[smtp]\nhost = \"mail.example\"\nfrom = \"a@shop.example\"\nretry_schedule_secs = []\n",
            "smtp.retry_schedule_secs",
        ),
    ];
    for (contents, needle) in cases {
        let path = dir.path().join("smtp.toml");
        std::fs::write(&path, contents).unwrap();
        let output = depositd().arg("--config").arg(&path).args(["check-config", "--offline"]).output().unwrap();
        assert_one_line_error(&output, needle);
    }
    let path = dir.path().join("smtp.toml");
    std::fs::write(&path, "[smtp]\nhost = \"mail.example\"\nport = 465\ntls = \"tls\"\nusername = \"u\"\nfrom = \"Shop <a@shop.example>\"\n")
        .unwrap();
    let output = depositd()
        .arg("--config")
        .arg(&path)
        .env("DEPOSITD__SMTP__PASSWORD", "SmtpPwCli4f2a")
        .env("RUST_LOG", "trace")
        .args(["check-config", "--offline"])
        .output()
        .unwrap();
    let all = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{all}");
    assert!(
        all.contains("smtp:     mail.example:465 (Tls), from Shop <a@shop.example>, credentials configured"),
        "{all}"
    );
    assert!(!all.contains("SmtpPwCli4f2a"), "{all}");
}

/// merchant create, api-key create/list/revoke through the binary, on both backends.
async fn merchant_and_key_commands(db: TestDb) {
    let url = db.url.expose().to_owned();
    let run = |args: &[&str]| depositd().arg("--database-url").arg(&url).args(args).output().unwrap();

    let output = run(&["migrate"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains(db.backend));

    let output = run(&[
        "merchant",
        "create",
        "--name",
        "Cli Shop",
        "--fee-percent",
        "1.25",
        "--payment-tolerance-percent",
        "0.5",
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let merchant_id: uuid::Uuid = String::from_utf8_lossy(&output.stdout).trim().parse().unwrap();

    let output = run(&["api-key", "create", "--merchant", "Cli Shop", "--scope", "invoices:read,invoices:write"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let key = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(key.starts_with("dk_test_"), "the default dev chain is a testnet: {key}");

    let output = run(&["api-key", "list", "--merchant", &merchant_id.to_string()]);
    let listing = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(listing.contains("active") && listing.contains("invoices:read,invoices:write"));
    assert!(!listing.contains(&key), "list shows prefixes, never keys");
    let key_id = listing.split('\t').next().unwrap().to_owned();

    let output = run(&["api-key", "revoke", &key_id]);
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&run(&["api-key", "list", "--merchant", "Cli Shop"]).stdout).contains("revoked"));

    assert_one_line_error(
        &run(&["api-key", "create", "--merchant", "Nobody"]),
        "no merchant with id or name \"Nobody\"",
    );
    assert_one_line_error(
        &run(&["api-key", "create", "--merchant", "Cli Shop", "--scope", "root"]),
        "unknown scope \"root\"",
    );
    assert_one_line_error(&run(&["merchant", "create", "--name", "X", "--fee-percent", "150"]), "--fee-percent");
    assert_one_line_error(
        &run(&["merchant", "create", "--name", "X", "--payment-tolerance-percent", "-1"]),
        "tolerance",
    );
    let listing = String::from_utf8_lossy(&run(&["merchant", "list"]).stdout).to_string();
    assert!(listing.contains("Cli Shop") && listing.contains("tolerance 0.5%"), "{listing}");

    // Fees per asset: stored exactly, checked on the way in.
    let output = run(&[
        "merchant",
        "set-fee",
        "--merchant",
        "Cli Shop",
        "--asset",
        "usdc",
        "--percent",
        "1.5",
        "--fixed",
        "0.30",
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("USDC fee 1.5% + 0.3 USDC"));
    // The default dev chain file has no tokens (depositd dev deploys them): said, not refused.
    assert!(String::from_utf8_lossy(&output.stderr).contains("warning: no enabled chain has an asset USDC"));
    let store = db.store().await;
    let mut conn = store.conn().await.unwrap();
    let fees = depositd_core::store::merchants::asset_fees(&mut conn, merchant_id).await.unwrap();
    assert_eq!(fees.len(), 1);
    assert_eq!(
        (fees[0].asset.as_str(), fees[0].percent.to_string(), fees[0].fixed.to_string()),
        ("USDC", "1.5".into(), "0.3".into())
    );
    for (args, needle) in [
        (vec!["--asset", "USDC", "--percent", "101"], "between 0 and 100"),
        (vec!["--asset", "USDC", "--percent", "1", "--fixed", "-1"], "must not be negative"),
        (vec!["--asset", "US DC", "--percent", "1"], "is not an asset symbol"),
    ] {
        let mut all = vec!["merchant", "set-fee", "--merchant", "Cli Shop"];
        all.extend(args);
        assert_one_line_error(&run(&all), needle);
    }
    assert_one_line_error(
        &run(&["merchant", "set-fee", "--merchant", "Nobody", "--asset", "USDC", "--percent", "1"]),
        "no merchant with id or name \"Nobody\"",
    );

    // Checkout origins for the payer API's CORS: exact origins only.
    let output =
        run(&["merchant", "set-checkout-origins", "--merchant", "Cli Shop", "--origin", "https://shop.example.com"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let origins =
        depositd_core::store::merchants::checkout_origins_for_invoice(&mut conn, uuid::Uuid::now_v7()).await.unwrap();
    assert!(origins.is_empty(), "no invoice, no origins");
    for bad in ["https://shop.example.com/checkout", "shop.example.com", "ftp://shop.example.com"] {
        assert_one_line_error(
            &run(&["merchant", "set-checkout-origins", "--merchant", "Cli Shop", "--origin", bad]),
            "--origin",
        );
    }

    // An empty ledger reconciles (offline: no chain to ask).
    let output = depositd()
        .arg("--database-url")
        .arg(&url)
        .env("DEPOSITD__WALLET__MNEMONIC", "test test test test test test test test test test test junk")
        .args(["ledger", "verify", "--offline"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("OK:"));
}

crate::helpers::both_backends!(merchant_and_key_commands);

/// A child process killed when dropped, so a failing assertion never leaves a daemon behind.
pub(crate) struct Daemon(pub(crate) std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `command` and waits for "API listening" on its stderr, which is then drained in the
/// background (as a log collector would) or, with `drain = false`, closed.
pub(crate) fn start_daemon(mut command: std::process::Command, drain: bool) -> Daemon {
    use std::io::BufRead;
    let mut child = Daemon(command.stderr(std::process::Stdio::piped()).spawn().unwrap());
    let mut lines = std::io::BufReader::new(child.0.stderr.take().unwrap()).lines();
    let up = lines.by_ref().any(|line| line.is_ok_and(|l| l.contains("API listening")));
    assert!(up, "the daemon did not start");
    if drain {
        std::thread::spawn(move || lines.for_each(drop));
    }
    child
}

/// Sends SIGTERM and waits (20 s at most) for a clean exit.
fn terminate(daemon: &mut Daemon) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(daemon.0.id() as i32), nix::sys::signal::Signal::SIGTERM)
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = daemon.0.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "the daemon ignored SIGTERM");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "SIGTERM is a clean exit: {status:?}");
}

#[test]
fn a_second_daemon_on_one_sqlite_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/depositd.db", dir.path().display());
    let daemon = || {
        let mut command = depositd();
        command
            .args(["--database-url", &url, "run", "--only", "api"])
            .env("DEPOSITD__API__LISTEN", "127.0.0.1:0")
            .env("DEPOSITD__WALLET__MNEMONIC", "test test test test test test test test test test test junk")
            .env("RUST_LOG", "info");
        command
    };
    let mut first = start_daemon(daemon(), true);
    let second = daemon().output().unwrap();
    assert_one_line_error(&second, "is in use by another depositd daemon");
    // Administrative commands still work beside the daemon.
    let listing = depositd().args(["--database-url", &url, "merchant", "list"]).output().unwrap();
    assert!(listing.status.success(), "{}", String::from_utf8_lossy(&listing.stderr));

    terminate(&mut first);
    // The lock went with the process: a new daemon starts. Its log pipe is then closed (a log
    // collector going away), and SIGTERM must still stop it: shutdown never waits on logging.
    let mut second = start_daemon(daemon(), false);
    std::thread::sleep(std::time::Duration::from_millis(200));
    terminate(&mut second);
}

/// Issue 21: every shipped mainnet file passes `check-config --offline` once the operator names
/// its own RPC endpoints in the variable the file reads; left on the file's public placeholders it
/// is refused, and on SQLite it is accepted with a warning. Testnets need neither.
#[test]
fn mainnet_chain_files_pass_check_config_with_the_operators_rpc_url() {
    let mainnets =
        [("arbitrum-one", "ETH"), ("base", "ETH"), ("ethereum", "ETH"), ("op-mainnet", "ETH"), ("polygon", "POL")];
    for (name, native) in mainnets {
        let var = format!("DEPOSITD_RPC_URLS_{}", name.to_ascii_uppercase().replace('-', "_"));
        let check = |rpc_url: Option<&str>, database: &str| {
            let mut command = depositd();
            command
                .env("DEPOSITD__CHAINS__ENABLED", name)
                .env("DEPOSITD__CHAINS__DEFAULT_CHAIN", name)
                .env("DEPOSITD__CHAINS__DEFAULT_ASSET", native)
                .env("DEPOSITD__DATABASE__URL", database)
                .env_remove(&var);
            if let Some(url) = rpc_url {
                command.env(&var, url);
            }
            command.args(["check-config", "--offline"]).output().unwrap()
        };
        let postgres = "postgres://depositd@db.example.invalid/depositd";
        let own = "https://node.example.invalid/v3/s3cretKey";

        let output = check(Some(own), postgres);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{name}: {}", String::from_utf8_lossy(&output.stderr));
        assert!(stderr_lines(&output).is_empty(), "{name}: no warning on PostgreSQL: {:?}", stderr_lines(&output));
        assert!(stdout.contains(&format!("chain {name} (id ")), "{stdout}");
        assert!(stdout.contains("1 RPC URL(s) (https://node.example.invalid/…)"), "{stdout}");
        assert!(!stdout.contains("s3cretKey"), "{stdout}");

        assert_one_line_error(
            &check(None, postgres),
            &format!("chain {name} is a mainnet and has no RPC URL: set {var} to your own endpoints"),
        );

        let output = check(Some(own), "sqlite://./data/depositd.db");
        assert!(output.status.success(), "{name}: {}", String::from_utf8_lossy(&output.stderr));
        let warnings = stderr_lines(&output);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].starts_with(&format!("warning: mainnet chain(s) {name} run on SQLite")), "{warnings:?}");
    }

    // A testnet may run on its public endpoints and on SQLite.
    let output = depositd()
        .env("DEPOSITD__CHAINS__ENABLED", "sepolia")
        .env("DEPOSITD__CHAINS__DEFAULT_CHAIN", "sepolia")
        .env_remove("DEPOSITD_RPC_URLS_SEPOLIA")
        .args(["check-config", "--offline"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stderr_lines(&output).is_empty(), "{:?}", stderr_lines(&output));
}
