//! `swappo-operator`: reconciles SwappoMessaging resources. See `--help` for the flags.
use anyhow::Context as _;
use clap::Parser;
use tokio_util::sync::CancellationToken;

/// mimalloc rather than glibc's allocator: with 1000 resources the start-up burst (initial
/// lists, 16 reconciles with their AMQP connections at once) left glibc's per-thread arenas
/// holding memory long after it was freed; `make bench-operator` measures the difference.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = swappo_operator::Config::parse();
    swappo_operator::telemetry::init(&config).map_err(anyhow::Error::msg)?;
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler installs");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        on_signal.cancel();
    });
    swappo_operator::run(config, shutdown)
        .await
        .context("swappo-operator")
}
