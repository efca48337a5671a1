//! The matchmaking service binary: configuration, logging, migrations, then the HTTP API and
//! the outbox relay until SIGTERM or Ctrl-C.
use anyhow::Context;
use clap::Parser;
use std::time::Duration;
use swappo_matchmaking::catalog::Catalog;
use swappo_matchmaking::chat::ChatOptions;
use swappo_matchmaking::config::{Config, LogFormat};
use swappo_matchmaking::{Service, connect_lazy, migrate, publisher_options, serve};
use swappo_messaging::BrokerConfig;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match config.log_format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs.init(),
    }
    tracing::info!(?config, "starting");

    let pool = connect_lazy(
        &config.database_url,
        config.database_max_connections,
        Duration::from_millis(config.database_acquire_timeout_ms),
    )
    .context("invalid DATABASE_URL")?;
    migrate(&pool)
        .await
        .context("applying database migrations")?;

    let shutdown = CancellationToken::new();
    let mut service = Service::new(pool);
    let relay = if config.outbox_relay {
        let broker = match &config.rabbitmq_url {
            Some(url) => BrokerConfig::from_url(url.clone()),
            None => BrokerConfig::from_env(),
        }
        .context("invalid RabbitMQ settings")?;
        let publisher = publisher_options(&config.notifications_queue);
        let relay = service.relay(broker, publisher, config.relay_options());
        Some(tokio::spawn(relay.run(shutdown.clone())))
    } else {
        None
    };

    service.set_cors(
        swappo_matchmaking::http::cors::layer(&config.cors_allowed_origins)
            .context("CORS_ALLOWED_ORIGINS")?,
    );
    if let Some(url) = &config.catalog_url {
        let catalog = Catalog::new(url, Duration::from_millis(config.catalog_timeout_ms))
            .context("catalog client")?;
        service.set_catalog(catalog);
    }
    let chat = match &config.chat_service_url {
        Some(url) => {
            let mut options = ChatOptions::new(url.clone());
            options.max_delay = Duration::from_millis(config.chat_max_backoff_ms);
            let relay = service.chat_rooms(options).context("chat client")?;
            Some(tokio::spawn(relay.run(shutdown.clone())))
        }
        None => None,
    };

    let listener = tokio::net::TcpListener::bind(config.listen_addr)
        .await
        .with_context(|| format!("binding {}", config.listen_addr))?;
    tracing::info!(addr = %config.listen_addr, "listening");
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        signal.cancel();
    });
    serve(listener, service.router(), shutdown.clone())
        .await
        .context("HTTP server")?;
    shutdown.cancel();
    if let Some(chat) = chat {
        chat.await.context("chat-room relay task")?;
    }
    if let Some(relay) = relay {
        relay.await.context("relay task")?.context("outbox relay")?;
    }
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler installs");
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
