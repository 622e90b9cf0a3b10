//! The shutdown token of a command that runs until it is told to stop (`depositd run`,
//! `depositd dev`): cancelled on SIGINT (Ctrl-C) or SIGTERM. Everything that runs listens to it.

use tokio_util::sync::CancellationToken;

/// A token cancelled on SIGINT (Ctrl-C) or SIGTERM.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let terminate = std::future::pending::<()>();
        let signal = tokio::select! {
            _ = ctrl_c => "SIGINT",
            _ = terminate => "SIGTERM",
        };
        // Cancel before logging: shutdown must not depend on the log destination (a closed
        // stderr pipe must not keep the daemon alive).
        trigger.cancel();
        tracing::info!(signal, "shutting down");
    });
    token
}
