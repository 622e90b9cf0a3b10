//! What the machine and `/proc` say: the machine's description for the report, a process's
//! resident memory and CPU time, the whole machine's CPU time.

use std::process::Command;

/// Linux reports CPU times in clock ticks of 1/100 s (USER_HZ) on every mainstream architecture.
const TICKS_PER_SECOND: f64 = 100.0;

/// The machine a report was measured on.
#[derive(Debug, Clone)]
pub struct Machine {
    pub cores: usize,
    pub cpu: String,
    pub memory_mib: u64,
    pub kernel: String,
    pub date: String,
    pub commit: String,
}

impl Machine {
    pub fn describe() -> Machine {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_mib = meminfo_kib(&meminfo, "MemTotal").unwrap_or(0) / 1024;
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned();
        let date = output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_else(|| "unknown date".into());
        // Neither command writes the index or anything else. `git diff` compares contents where
        // the index's stat cache is stale (a file rewritten unchanged, as `cargo fmt` does), which
        // `git diff-index` would report as a change.
        let commit = match output("git", &["rev-parse", "--short", "HEAD"]) {
            Some(hash) => {
                let clean = Command::new("git")
                    .args(["diff", "--quiet", "HEAD", "--"])
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(true);
                if clean { hash } else { format!("{hash} (with uncommitted changes)") }
            }
            None => "unknown commit".into(),
        };
        Machine { cores, cpu, memory_mib, kernel, date, commit }
    }

    pub fn one_line(&self) -> String {
        format!(
            "{} cores ({}), {} MiB memory, Linux {}, {}, commit {}",
            self.cores, self.cpu, self.memory_mib, self.kernel, self.date, self.commit
        )
    }
}

fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn meminfo_kib(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// How busy the machine is with other work: busy cores over `window`, while this process idles.
pub fn background_load(window: std::time::Duration) -> f64 {
    let before = machine_cpu_seconds();
    std::thread::sleep(window);
    let after = machine_cpu_seconds();
    (after.0 - before.0) / window.as_secs_f64()
}

/// Resident and peak resident memory of a process, in KiB (`VmRSS`, `VmHWM`).
pub fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some((meminfo_kib(&status, "VmRSS")?, meminfo_kib(&status, "VmHWM")?))
}

/// CPU seconds (user + system) a process has used so far, its threads included.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    cpu_split(pid).map(|(user, system)| user + system)
}

/// CPU seconds a process has used so far in user space and in the kernel, its threads included.
pub fn cpu_split(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after its closing parenthesis are fixed.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ppid(4) ... utime(14) stime(15), i.e. indexes 11 and 12 here.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime / TICKS_PER_SECOND, stime / TICKS_PER_SECOND))
}

/// CPU seconds this process has used.
pub fn own_cpu_seconds() -> f64 {
    cpu_seconds(std::process::id()).unwrap_or(0.0)
}

/// The whole machine's busy and total CPU seconds (all cores) since boot, from `/proc/stat`.
pub fn machine_cpu_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else { return (0.0, 0.0) };
    let values: Vec<f64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    let total: f64 = values.iter().take(8).sum();
    // idle (3) and iowait (4) are not busy.
    let idle = values.get(3).copied().unwrap_or(0.0) + values.get(4).copied().unwrap_or(0.0);
    ((total - idle) / TICKS_PER_SECOND, total / TICKS_PER_SECOND)
}

/// The pid of the process listening on a loopback TCP `port` that was started with
/// `--port <port>` on its command line (how anvil is started), found by reading `/proc`.
pub fn pid_with_port_argument(program: &str, port: u16) -> Option<u32> {
    let port = port.to_string();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let named = args.first().is_some_and(|a| String::from_utf8_lossy(a).ends_with(program));
        let on_port = args.windows(2).any(|w| w[0] == b"--port" && w[1] == port.as_bytes());
        if named && on_port {
            return Some(pid);
        }
    }
    None
}

/// The pids of every process whose command name (`/proc/<pid>/comm`) is `name`, e.g. the
/// PostgreSQL server's processes.
pub fn pids_named(name: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name))
        .collect()
}

/// A metered process: (pid, user seconds, kernel seconds) when metering started.
type ProcessStart = (u32, f64, f64);

/// CPU use over an interval: this process, groups of other processes, and the whole machine.
pub struct CpuMeter {
    /// (name, [(pid, user seconds, kernel seconds at the start)]).
    groups: Vec<(String, Vec<ProcessStart>)>,
    own: f64,
    machine: (f64, f64),
    started: std::time::Instant,
}

/// Where the CPU went during an interval, in cores (1.0 = one core busy all the time).
#[derive(Debug, Clone)]
pub struct CpuUse {
    pub processes: Vec<(String, f64)>,
    /// The kernel (system call) part of each group's use.
    pub kernel: Vec<(String, f64)>,
    pub harness: f64,
    pub machine_busy: f64,
    pub machine_cores: f64,
}

impl CpuMeter {
    /// Meters `(name, pid)` processes, plus the PostgreSQL server's processes as "postgres" when
    /// any run (their CPU is the database's share).
    pub fn start(pids: &[(&str, u32)]) -> CpuMeter {
        let mut groups: Vec<(String, Vec<u32>)> = pids.iter().map(|(n, p)| ((*n).to_owned(), vec![*p])).collect();
        let postgres = pids_named("postgres");
        if !postgres.is_empty() {
            groups.push(("postgres".into(), postgres));
        }
        CpuMeter {
            groups: groups
                .into_iter()
                .map(|(n, ps)| {
                    let start = ps
                        .into_iter()
                        .map(|p| {
                            let (user, system) = cpu_split(p).unwrap_or((0.0, 0.0));
                            (p, user, system)
                        })
                        .collect();
                    (n, start)
                })
                .collect(),
            own: own_cpu_seconds(),
            machine: machine_cpu_seconds(),
            started: std::time::Instant::now(),
        }
    }

    pub fn stop(&self) -> CpuUse {
        let wall = self.started.elapsed().as_secs_f64().max(1e-9);
        let (busy, total) = machine_cpu_seconds();
        CpuUse {
            processes: self
                .groups
                .iter()
                .map(|(n, ps)| {
                    let used: f64 =
                        ps.iter().map(|(p, user, system)| cpu_seconds(*p).map_or(0.0, |now| now - user - system)).sum();
                    (n.clone(), used / wall)
                })
                .collect(),
            kernel: self
                .groups
                .iter()
                .map(|(n, ps)| {
                    let used: f64 =
                        ps.iter().map(|(p, _, system)| cpu_split(*p).map_or(0.0, |(_, now)| now - system)).sum();
                    (n.clone(), used / wall)
                })
                .collect(),
            harness: (own_cpu_seconds() - self.own) / wall,
            machine_busy: (busy - self.machine.0) / wall,
            machine_cores: (total - self.machine.1) / wall,
        }
    }
}

impl CpuUse {
    /// "depositd 1.2 cores, harness 0.6, other 0.1 (of 2.0 busy 1.9)".
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self.processes.iter().map(|(n, c)| format!("{n} {c:.2}")).collect();
        parts.push(format!("harness {:.2}", self.harness));
        let named: f64 = self.processes.iter().map(|(_, c)| c).sum::<f64>() + self.harness;
        parts.push(format!("everything else {:.2}", (self.machine_busy - named).max(0.0)));
        format!(
            "CPU in cores: {} (machine busy {:.2} of {:.0})",
            parts.join(", "),
            self.machine_busy,
            self.machine_cores.round()
        )
    }
}
