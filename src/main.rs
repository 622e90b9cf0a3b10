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
            // `{:#}` prints the whole context chain on one line: "cannot X: because Y: because Z".
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
