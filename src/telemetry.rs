//! Logging: human-readable by default, JSON with `--log-format json`, filtered by `RUST_LOG`.
//!
//! RPC URLs are secrets (providers' keys live in their path, query or userinfo), and HTTP
//! libraries put the URL in what they log and in their errors. So, whatever `RUST_LOG` says:
//! alloy's transport spans (which record the whole URL as a field) are never enabled, and every
//! line written has each web URL in it cut to scheme and host ([`depositd_core::secret::redact_urls`]).

use std::io::Write;

use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

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
    // alloy's `ReqwestTransport`/`HyperTransport` spans carry `url = <the whole URL>`.
    let no_transport_spans = filter_fn(|meta| !(meta.is_span() && meta.target().starts_with("alloy_transport")));
    let filter = filter.and(no_transport_spans);
    // log_internal_errors(false): a failed log write is otherwise reported with eprintln!, which
    // panics when stderr is a closed pipe (a log collector went away): the daemon must outlive
    // its log destination and still shut down cleanly.
    let layer = tracing_subscriber::fmt::layer().with_writer(RedactingStderr).log_internal_errors(false);
    let layer = match format {
        LogFormat::Human => layer.boxed(),
        LogFormat::Json => layer.json().flatten_event(true).boxed(),
    };
    // A second init (tests calling into the library) keeps the first subscriber.
    let _ = tracing_subscriber::registry().with(layer.with_filter(filter)).try_init();
}

/// stderr, with every web URL in a written line cut to scheme and host. The formatter writes
/// each event with one `write_all` of the whole line, so a URL is never split across writes.
struct RedactingStderr;

impl<'a> MakeWriter<'a> for RedactingStderr {
    type Writer = RedactingWriter;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter
    }
}

struct RedactingWriter;

impl Write for RedactingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let shown = depositd_core::secret::redact_urls(&String::from_utf8_lossy(buf));
        std::io::stderr().write_all(shown.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
