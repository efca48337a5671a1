//! A database of its own for one test, dropped when the value is dropped.
use crate::{block_on_cleanup, database_url, unique_name};
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};

/// A fresh, empty PostgreSQL database on the shared test server.
pub struct TestDb {
    name: String,
    url: String,
    admin_url: String,
}

impl TestDb {
    /// Creates a database named `<prefix><random>` owned by the test user; panics with the
    /// reason when PostgreSQL is not reachable (run `make testenv-deps`).
    pub async fn new(prefix: &str) -> Self {
        let admin_url = database_url();
        let name = unique_name(prefix).replace('-', "_");
        let mut conn = PgConnection::connect(&admin_url).await.unwrap_or_else(|e| {
            panic!("cannot reach PostgreSQL: {e} (is it up? run `make testenv-deps`)")
        });
        // The name is ours (prefix + random hex), never user input.
        conn.execute(AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        conn.close().await.ok();
        let mut url = reqwest::Url::parse(&admin_url).expect("DATABASE_URL is a URL");
        url.set_path(&format!("/{name}"));
        Self {
            name,
            url: url.to_string(),
            admin_url,
        }
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A connection URL for this database.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (name, admin_url) = (self.name.clone(), self.admin_url.clone());
        block_on_cleanup(async move {
            let dropped = async {
                let mut conn = PgConnection::connect(&admin_url).await?;
                conn.execute(AssertSqlSafe(format!(
                    r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#
                )))
                .await?;
                conn.close().await
            };
            if let Err(e) = dropped.await {
                eprintln!("testkit: could not drop database {name}: {e}");
            }
        });
    }
}
