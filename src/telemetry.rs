//! Logging: human-readable by default, JSON with `--log-format json`, filtered by `RUST_LOG`.

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// Installs the global subscriber. Logs go to stderr so command output on stdout stays clean.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,alloy=warn,hyper=warn"));
    // log_internal_errors(false): a failed log write is otherwise reported with eprintln!, which
    // panics when stderr is a closed pipe (a log collector went away): the daemon must outlive
    // its log destination and still shut down cleanly.
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).log_internal_errors(false);
    let result = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // A second init (tests calling into the library) keeps the first subscriber.
    let _ = result;
}
