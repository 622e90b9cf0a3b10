//! The report: one section per benchmark (how it was set up, its tables, its targets and notes),
//! rendered as Markdown for the terminal and `BENCHMARKS.md`.

use std::time::Duration;

use crate::sys::Machine;

pub struct Report {
    machine: Machine,
    /// The command that produced the report.
    pub command: String,
    pub elapsed: Duration,
    /// Busy cores before the run started (other work on the machine).
    pub background: f64,
    sections: Vec<Section>,
}

/// One benchmark's results.
#[derive(Default)]
pub struct Section {
    pub title: String,
    /// How the workload was made, its sizes, and any deviation from the sizes.
    pub setup: Vec<String>,
    pub tables: Vec<Table>,
    pub targets: Vec<Target>,
    /// Where the time goes, profiles, caveats.
    pub notes: Vec<String>,
}

pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table { header: header.iter().map(|h| (*h).to_owned()).collect(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn markdown(&self) -> String {
        let line = |cells: &[String]| format!("| {} |", cells.join(" | "));
        let mut out = vec![line(&self.header), line(&self.header.iter().map(|_| "---".to_owned()).collect::<Vec<_>>())];
        out.extend(self.rows.iter().map(|r| line(r)));
        out.join("\n")
    }
}

/// A target from the issue and what this run measured against it.
pub struct Target {
    pub goal: String,
    pub measured: String,
    pub met: bool,
    /// When not met: what bounds the figure.
    pub bound: Option<String>,
}

impl Report {
    pub fn new(machine: Machine) -> Report {
        let args: Vec<String> = std::env::args().skip(1).collect();
        Report {
            machine,
            command: format!("cargo run --release -p depositd-bench -- {}", args.join(" ")),
            elapsed: Duration::ZERO,
            background: 0.0,
            sections: Vec::new(),
        }
    }

    pub fn push(&mut self, section: Section) {
        self.sections.push(section);
    }

    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let mut out = String::new();
        out.push_str("# Benchmarks\n\n");
        out.push_str(&format!(
            "Written by the benchmark harness (`bench/`, `make bench`) from one run of `{}`, which took {}. \
             Every figure below comes from that run; the benchmarks that compare figures (the watcher against the \
             limit, SQLite against PostgreSQL, WebSocket heads against polling) measured them side by side, so a \
             noisy machine still gives a true ratio. Do not edit by hand: run `make bench` again.\n\n",
            self.command,
            minutes(self.elapsed)
        ));
        out.push_str("## Machine\n\n");
        let mut machine =
            Table::new(&["cores", "CPU", "memory", "kernel", "date", "commit", "busy before the run (other work)"]);
        machine.row(vec![
            m.cores.to_string(),
            m.cpu.clone(),
            format!("{} MiB", m.memory_mib),
            format!("Linux {}", m.kernel),
            m.date.clone(),
            format!("`{}`", m.commit),
            format!("{:.2} cores", self.background),
        ]);
        out.push_str(&machine.markdown());
        if self.background > 0.25 {
            out.push_str(&format!(
                "\n\n**The machine was busy with other work when the run started ({:.2} cores over 2 s)**: absolute \
                 figures are lower than on an idle machine; the side-by-side ratios still hold.",
                self.background
            ));
        }
        out.push_str("\n\n## Targets\n\n");
        let mut targets = Table::new(&["benchmark", "target", "measured", "met"]);
        for section in &self.sections {
            for t in &section.targets {
                targets.row(vec![
                    section.title.clone(),
                    t.goal.clone(),
                    t.measured.clone(),
                    if t.met { "yes".into() } else { "**no**".into() },
                ]);
            }
        }
        out.push_str(&targets.markdown());
        out.push('\n');
        let unmet: Vec<(&Section, &Target)> =
            self.sections.iter().flat_map(|s| s.targets.iter().filter(|t| !t.met).map(move |t| (s, t))).collect();
        if !unmet.is_empty() {
            out.push_str("\n### Not met, and what bounds them\n\n");
            for (section, t) in unmet {
                out.push_str(&format!(
                    "- **{}: {}.** Measured {}. {}\n",
                    section.title,
                    t.goal,
                    t.measured,
                    t.bound.as_deref().unwrap_or("")
                ));
            }
        }
        for section in &self.sections {
            out.push_str(&format!("\n## {}\n\n", section.title));
            for line in &section.setup {
                out.push_str(&format!("- {line}\n"));
            }
            for table in &section.tables {
                out.push('\n');
                out.push_str(&table.markdown());
                out.push('\n');
            }
            if !section.notes.is_empty() {
                out.push('\n');
                for note in &section.notes {
                    out.push_str(&format!("- {note}\n"));
                }
            }
        }
        out
    }
}

fn minutes(d: Duration) -> String {
    let s = d.as_secs();
    format!("{} min {:02} s", s / 60, s % 60)
}
