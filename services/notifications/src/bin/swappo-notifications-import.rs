//! One-off import of the original Python notifications service's rows into this service's
//! database, keeping their ids (see `swappo_notifications::import`). Run it once, before the
//! service first consumes, with the original service stopped:
//!
//! ```text
//! ORIGINAL_DATABASE_URL=postgres://.../notifications_db DATABASE_URL=postgres://.../ours \
//!   swappo-notifications-import
//! ```
use anyhow::Context;
use clap::Parser;
use sqlx::postgres::PgPoolOptions;

/// Copies the original service's notifications into this service's database.
#[derive(Parser)]
#[command(name = "swappo-notifications-import", version)]
struct Args {
    /// PostgreSQL URL of the original service's database (read only).
    #[arg(long, env = "ORIGINAL_DATABASE_URL", hide_env_values = true)]
    original_database_url: String,
    /// PostgreSQL URL of this service's database (migrated first if needed).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let source = PgPoolOptions::new()
        .max_connections(1)
        .connect(&args.original_database_url)
        .await
        .context("connecting to the original database")?;
    let storage = swappo_notifications::Storage::connect_lazy(
        &args.database_url,
        2,
        std::time::Duration::from_secs(30),
    )
    .context("DATABASE_URL")?;
    storage
        .migrate()
        .await
        .context("migrating the target database")?;
    let report = swappo_notifications::import::import(&source, storage.pool())
        .await
        .context("import failed; nothing was written")?;
    println!(
        "read {} notifications: {} imported, {} already imported before",
        report.read, report.imported, report.already_there
    );
    Ok(())
}
