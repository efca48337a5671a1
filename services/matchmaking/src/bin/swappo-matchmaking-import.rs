//! One-off import of the original Python matchmaking service's trade offers into this
//! service's database, keeping their ids (see `swappo_matchmaking::import`). Run it once,
//! before the service first serves, with the original service stopped:
//!
//! ```text
//! ORIGINAL_DATABASE_URL=postgres://.../matchmaking_db DATABASE_URL=postgres://.../ours \
//!   swappo-matchmaking-import
//! ```
use anyhow::Context;
use clap::Parser;
use sqlx::postgres::PgPoolOptions;

/// Copies the original service's trade offers into this service's database.
#[derive(Parser)]
#[command(name = "swappo-matchmaking-import", version)]
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
    let target = PgPoolOptions::new()
        .max_connections(2)
        .connect(&args.database_url)
        .await
        .context("connecting to the target database")?;
    swappo_matchmaking::migrate(&target)
        .await
        .context("migrating the target database")?;
    let report = swappo_matchmaking::import::import(&source, &target)
        .await
        .context("import failed; nothing was written")?;
    println!(
        "read {} trade offers: {} imported, {} already imported before",
        report.read, report.imported, report.already_there
    );
    Ok(())
}
