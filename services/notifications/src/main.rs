//! The notifications service binary: parse the configuration, set up logging, run until
//! SIGTERM or Ctrl-C, then finish the batch in hand and exit.
use anyhow::Context;
use clap::Parser;
use swappo_notifications::config::{Config, LogFormat};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    match config.log_format {
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
    }
    tracing::info!(?config, "starting");

    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let service = swappo_notifications::app::start(config, shutdown)
        .await
        .context("start-up failed")?;
    service.wait().await.context("the service failed")?;
    tracing::info!("stopped");
    Ok(())
}

/// Cancels `shutdown` on SIGTERM (Kubernetes stopping the pod) or Ctrl-C.
async fn cancel_on_signal(shutdown: CancellationToken) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C: shutting down"),
    }
    shutdown.cancel();
}
