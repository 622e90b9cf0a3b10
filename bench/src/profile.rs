//! Sampling profiles with `perf` (Linux): `perf record` attached to processes for the length of a
//! measurement, then the hottest symbols from `perf report`. Used where a target may be missed,
//! to say where the time goes; skipped (with a note) when perf is missing or not permitted.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

/// A `perf record` in progress.
pub struct Perf {
    child: tokio::process::Child,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

impl Perf {
    /// Starts sampling `pids` (and the PostgreSQL server's processes when any run), user and kernel
    /// space where permitted, at 499 Hz: light enough not to move the figures much.
    /// `None` when profiling is off or perf cannot run.
    pub async fn start(enabled: bool, pids: &[u32]) -> Option<Perf> {
        if !enabled || pids.is_empty() {
            return None;
        }
        let dir = tempfile::Builder::new().prefix("depositd-bench-perf-").tempdir().ok()?;
        let data = dir.path().join("perf.data");
        let pid_list: Vec<String> =
            pids.iter().copied().chain(crate::sys::pids_named("postgres")).map(|p| p.to_string()).collect();
        // Kernel samples need privileges (perf_event_paranoid < 2, or root); user space is enough.
        let paranoid: i32 = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(2);
        let root = std::fs::read_to_string("/proc/self/status")
            .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0")));
        let event = if paranoid < 2 || root { "cpu-clock" } else { "cpu-clock:u" };
        let mut child = tokio::process::Command::new("perf")
            .args(["record", "-q", "-F", "499", "-e", event, "-o"])
            .arg(&data)
            .arg("-p")
            .arg(pid_list.join(","))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .ok()?;
        // perf exits at once when it may not attach.
        tokio::time::sleep(Duration::from_millis(300)).await;
        if child.try_wait().ok()?.is_some() {
            return None;
        }
        Some(Perf { child, data, _dir: dir })
    }

    /// Stops sampling; a first line with the share of samples per binary, then the `top`
    /// hottest user-space symbols as "12.3% depositd sqlx_core::..." (percent of all samples,
    /// binary, symbol). Kernel samples count in the per-binary line only: sampled with a timer,
    /// they mostly land where the kernel re-enables interrupts, which says little.
    pub async fn finish(mut self, top: usize) -> Vec<String> {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGINT);
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
        let report = |sort: &'static str| {
            let data = self.data.clone();
            async move {
                let output = tokio::process::Command::new("perf")
                    .args(["report", "--stdio", "--no-children", "--sort", sort, "-i"])
                    .arg(&data)
                    .stderr(Stdio::null())
                    .output()
                    .await;
                output
                    .map(|o| {
                        String::from_utf8_lossy(&o.stdout)
                            .lines()
                            .filter(|l| !l.starts_with('#') && l.contains('%'))
                            .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<String>>())
                            .collect::<Vec<Vec<String>>>()
                    })
                    .unwrap_or_default()
            }
        };
        let by_binary = report("dso").await;
        if by_binary.is_empty() {
            return Vec::new();
        }
        let mut lines = vec![format!(
            "by binary: {}",
            by_binary
                .iter()
                .take(6)
                .map(|f| format!("{} {}", f.get(1).map(String::as_str).unwrap_or("?"), f[0]))
                .collect::<Vec<_>>()
                .join(", ")
        )];
        // "12.34%  depositd  [.] sqlx_core::...": percent, binary, marker, symbol.
        for fields in
            report("dso,symbol").await.into_iter().filter(|f| f.get(2).map(String::as_str) == Some("[.]")).take(top)
        {
            let symbol: String = fields
                .iter()
                .skip(3)
                .filter(|p| *p != "-")
                .cloned()
                .collect::<Vec<_>>()
                .join(" ")
                .chars()
                .take(110)
                .collect();
            lines.push(format!("{} {} {symbol}", fields[0], fields.get(1).map(String::as_str).unwrap_or("")));
        }
        lines
    }
}

/// A profile as a Markdown note: a heading line and a code block.
pub fn note(title: &str, lines: &[String]) -> String {
    if lines.is_empty() {
        return format!("{title}: no profile (perf is not installed, not permitted, or --no-profile).");
    }
    format!(
        "{title} (perf, all samples of the processes named; user-space symbols):\n\n  ```text\n  {}\n  ```",
        lines.join("\n  ")
    )
}

/// Samples what PostgreSQL's client sessions on the current database are doing
/// (`pg_stat_activity`, every 25 ms) until `stop`; returns (state, share of samples), most
/// frequent first. Reading the view does not disturb the sessions.
pub fn sample_postgres_waits(
    store: depositd_core::store::Store,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<Vec<(String, f64)>> {
    tokio::spawn(async move {
        let mut tally: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
        let mut total = 0u64;
        while !stop.is_cancelled() {
            let rows: Vec<(String, String, String)> = sqlx::query_as(
                "SELECT COALESCE(state, '')::TEXT, COALESCE(wait_event_type, '')::TEXT, COALESCE(wait_event, '')::TEXT \
                 FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() \
                 AND backend_type = 'client backend'",
            )
            .fetch_all(store.pool())
            .await
            .unwrap_or_default();
            for (state, kind, event) in rows {
                let label = match (state.as_str(), kind.as_str()) {
                    ("active", "") => "running a statement (on CPU)".to_owned(),
                    ("active", _) => format!("running a statement, waiting on {kind}: {event}"),
                    ("idle in transaction", _) => "in a transaction, waiting for depositd's next statement".to_owned(),
                    ("idle", _) => "idle (no request)".to_owned(),
                    (other, _) => other.to_owned(),
                };
                *tally.entry(label).or_default() += 1;
                total += 1;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let mut shares: Vec<(String, f64)> =
            tally.into_iter().map(|(label, n)| (label, n as f64 / total.max(1) as f64)).collect();
        shares.sort_by(|a, b| b.1.total_cmp(&a.1));
        shares
    })
}

/// One system call in a `strace -c` summary: (name, share of syscall time, calls, µs per call).
pub type SyscallRow = (String, f64, u64, u64);

/// `strace -c -f` attached to `pid` while `work` runs: the syscalls that took the most time, as
/// (syscall, share of syscall time, calls, microseconds per call). Empty when strace is missing
/// or may not attach. strace slows the process down: use it on a diagnostic run, never a measured one.
pub async fn strace_summary<F: std::future::Future>(pid: u32, work: F) -> (F::Output, Vec<SyscallRow>) {
    let Ok(dir) = tempfile::Builder::new().prefix("depositd-bench-strace-").tempdir() else {
        return (work.await, Vec::new());
    };
    let out = dir.path().join("strace.txt");
    let child = tokio::process::Command::new("strace")
        .args(["-c", "-f", "-q", "-o"])
        .arg(&out)
        .arg("-p")
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let Ok(mut child) = child else { return (work.await, Vec::new()) };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let output = work.await;
    if let Some(id) = child.id() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(id as i32), nix::sys::signal::Signal::SIGINT);
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    // "% time     seconds  usecs/call     calls    errors syscall", rows below a dashed line.
    let rows = text
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 5 || f.last() == Some(&"total") {
                return None;
            }
            let share: f64 = f[0].parse().ok()?;
            let usecs: u64 = f[2].parse().ok()?;
            let calls: u64 = f[3].parse().ok()?;
            Some(((*f.last()?).to_owned(), share / 100.0, calls, usecs))
        })
        .take(4)
        .collect();
    (output, rows)
}
