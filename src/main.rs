//! `depositd`: thin entry point. Parses the command line, sets up logging, runs the command, and
//! turns any failure into one readable line on stderr and a non-zero exit code.

use clap::Parser;
use depositd::cli::Cli;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    depositd::telemetry::init(cli.log_format);
    match depositd::commands::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // Errors of HTTP libraries quote the URL they failed on, RPC keys and all.
            eprintln!("error: {}", depositd_core::secret::redact_urls(&one_line(&error)));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The cause chain on one line, "cannot X: because Y: because Z", skipping a cause whose text the
/// previous message already contains (some libraries repeat their source in their own message).
fn one_line(error: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !parts.last().is_some_and(|previous| previous.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ").replace('\n', " ")
}
