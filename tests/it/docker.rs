//! `docker/` without a Docker engine: the compose file and the binary agree on ports and
//! environment variable names, Prometheus's configuration and alert rules pass `promtool`, and
//! every metric the alerts and the Grafana dashboard use is one depositd exports.

use std::collections::BTreeSet;
use std::path::Path;

use secrecy::ExposeSecret;

use crate::helpers::depositd;

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// `KEY: value` lines of the compose file whose key is an environment variable name.
fn compose_environment(compose: &str) -> Vec<(String, String)> {
    compose
        .lines()
        .filter_map(|line| line.trim().split_once(": "))
        .filter(|(key, _)| key.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'))
        .filter(|(key, _)| key.starts_with("DEPOSITD") || *key == "DATABASE_URL")
        .map(|(key, value)| (key.to_owned(), value.trim().to_owned()))
        .collect()
}

#[test]
fn the_compose_file_and_the_binary_agree_on_ports_and_variables() {
    let compose = read("docker/docker-compose.yml");
    let dockerfile = read("docker/Dockerfile");
    let environment = compose_environment(&compose);
    let names: BTreeSet<&str> = environment.iter().map(|(k, _)| k.as_str()).collect();
    for expected in ["DATABASE_URL", "DEPOSITD__WALLET__MNEMONIC", "DEPOSITD_RPC_URLS_ANVIL", "DEPOSITD__API__LISTEN"] {
        assert!(names.contains(expected), "docker-compose.yml sets no {expected}");
    }
    // The chain file reads its RPC URLs from the variable compose sets.
    assert!(read("chains/anvil.toml").contains("rpc_urls_env = \"DEPOSITD_RPC_URLS_ANVIL\""));

    // The daemon listens where compose, the Dockerfile and Prometheus expect it.
    let listen = environment.iter().find(|(k, _)| k == "DEPOSITD__API__LISTEN").unwrap().1.clone();
    assert_eq!(listen, "0.0.0.0:8080");
    assert!(dockerfile.contains("DEPOSITD__API__LISTEN=0.0.0.0:8080") && dockerfile.contains("EXPOSE 8080"));
    assert!(dockerfile.contains("http://127.0.0.1:8080/healthz"), "the image's healthcheck probes the API port");
    assert!(compose.contains("\"8081:8080\"") && compose.contains("\"8082:8080\""));
    let prometheus = read("docker/prometheus/prometheus.yml");
    assert!(prometheus.contains("depositd-1:8080") && prometheus.contains("depositd-2:8080"));

    // Every variable name is one the binary accepts (unknown configuration keys are errors).
    let dir = tempfile::tempdir().unwrap();
    let mut command = depositd();
    command.arg("check-config").arg("--offline");
    for (key, value) in &environment {
        let value = match key.as_str() {
            // The values name compose's hosts; only the names are under test here.
            "DATABASE_URL" => format!("sqlite://{}", dir.path().join("db.sqlite").display()),
            "DEPOSITD__WALLET__MNEMONIC" => {
                depositd_core::wallet::HdWallet::generate_mnemonic().expose_secret().to_owned()
            }
            _ => value.clone(),
        };
        command.env(key, value);
    }
    let output = command.output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("listen 0.0.0.0:8080") && stdout.contains("chain anvil"), "{stdout}");
}

#[test]
fn prometheus_rules_and_configuration_pass_promtool() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/prometheus");
    for args in [["check", "rules", "alerts.yml"], ["check", "config", "prometheus.yml"]] {
        let output = match std::process::Command::new("promtool").args(args).current_dir(&dir).output() {
            Ok(output) => output,
            Err(_) if std::env::var_os("CI").is_none() => {
                eprintln!("SKIPPED: promtool is not installed (apt-get install prometheus)");
                return;
            }
            Err(error) => panic!("promtool is required under CI: {error}"),
        };
        assert!(output.status.success(), "promtool {args:?}: {}", String::from_utf8_lossy(&output.stdout));
    }
}

/// The `depositd_*` names in a text, with histogram suffixes removed.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("depositd_") {
        let tail = &rest[start..];
        let end =
            tail.find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')).unwrap_or(tail.len());
        let name = &tail[..end];
        let name = name.strip_suffix("_bucket").unwrap_or(name);
        names.insert(name.to_owned());
        rest = &tail[end..];
    }
    names
}

#[test]
fn alerts_and_the_dashboard_use_only_metrics_depositd_exports() {
    let exported = metric_names(&read("core/src/metrics.rs"));
    assert!(exported.contains("depositd_chain_head_block") && exported.len() > 20);
    let dashboard: serde_json::Value = serde_json::from_str(&read("docker/grafana/dashboards/depositd.json")).unwrap();
    assert_eq!(dashboard["uid"], "depositd");
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(!panels.is_empty());
    let mut used = metric_names(&read("docker/prometheus/alerts.yml"));
    for panel in panels {
        let expr = panel["targets"][0]["expr"].as_str().expect("every panel has a query");
        let names = metric_names(expr);
        assert!(!names.is_empty(), "panel {} queries no depositd metric", panel["title"]);
        used.extend(names);
    }
    let unknown: Vec<&String> = used.iter().filter(|name| !exported.contains(*name)).collect();
    assert!(unknown.is_empty(), "not exported by depositd: {unknown:?}");
}
