//! A PostgreSQL server of one test's own, for database outages: stopping the shared server
//! would break every other test running at the same time.
//!
//! `initdb` into a fresh directory under the system temp dir, then `pg_ctl` on a free
//! loopback port. PostgreSQL refuses to run as root, so when the tests run as root the
//! binaries run as the `postgres` OS user (via `runuser`). Trust authentication on
//! loopback only; the server and its directory are removed on drop.
use std::path::{Path, PathBuf};
use tokio::process::Command;

/// Where Debian's PostgreSQL 15 server binaries live (`PG_BIN_DIR` overrides).
const DEFAULT_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";
/// OS user the server runs as when the tests run as root.
const OS_USER: &str = "postgres";

/// A private PostgreSQL server; stopped and deleted on drop.
pub struct PrivatePostgres {
    dir: PathBuf,
    port: u16,
    bin_dir: PathBuf,
    as_root: bool,
}

impl PrivatePostgres {
    /// Initialises and starts a server; panics with the reason when that fails.
    pub async fn start() -> Self {
        let bin_dir =
            PathBuf::from(std::env::var("PG_BIN_DIR").unwrap_or_else(|_| DEFAULT_BIN_DIR.into()));
        let dir = std::env::temp_dir().join(crate::unique_name("swappo-pg-"));
        std::fs::create_dir_all(&dir).expect("create the private postgres dir");
        let as_root = is_root().await;
        let pg = Self {
            port: free_port(),
            dir,
            bin_dir,
            as_root,
        };
        if as_root {
            run(
                Command::new("chown")
                    .arg(format!("{OS_USER}:"))
                    .arg(&pg.dir),
                "chown",
            )
            .await;
        }
        let initdb = pg.bin_dir.join("initdb");
        let mut cmd = pg.command(&initdb);
        cmd.arg("-D")
            .arg(pg.data_dir())
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8"]);
        // The data is thrown away after the test: skip the fsyncs.
        cmd.arg("--no-sync");
        run(&mut cmd, "initdb").await;
        pg.start_server().await;
        pg
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL for `database` (user `postgres`, no password: trust on loopback).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Stops the server (fast shutdown: clients are disconnected at once) and waits until
    /// it is down. Connections fail until [`restart`](Self::restart).
    pub async fn stop(&self) {
        self.pg_ctl(&["-m", "fast", "-w", "-t", "60", "stop"], "pg_ctl stop")
            .await;
    }

    /// Starts the stopped server again on the same port, with the same data.
    pub async fn restart(&self) {
        self.start_server().await;
    }

    async fn start_server(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("server.log");
        let log = log.to_str().expect("temp paths are UTF-8");
        self.pg_ctl(
            &["-w", "-t", "60", "-l", log, "-o", &options, "start"],
            "pg_ctl start",
        )
        .await;
    }

    async fn pg_ctl(&self, args: &[&str], what: &str) {
        let mut cmd = self.command(&self.bin_dir.join("pg_ctl"));
        cmd.arg("-D").arg(self.data_dir()).args(args);
        run(&mut cmd, what).await;
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn command(&self, program: &Path) -> Command {
        if self.as_root {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", OS_USER, "--"]).arg(program);
            cmd
        } else {
            Command::new(program)
        }
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let pg_ctl = self.bin_dir.join("pg_ctl");
        let mut cmd = if self.as_root {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", OS_USER, "--"]).arg(&pg_ctl);
            c
        } else {
            std::process::Command::new(&pg_ctl)
        };
        // Immediate: nothing here is worth a clean shutdown; a stopped server just fails.
        cmd.arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "-w", "stop"]);
        let _ = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("testkit: could not remove {}: {e}", self.dir.display());
        }
    }
}

async fn is_root() -> bool {
    let out = Command::new("id")
        .arg("-u")
        .output()
        .await
        .expect("`id -u` runs");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// A port nothing listens on right now (the OS picks it; released before use).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

async fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .await
        .unwrap_or_else(|e| panic!("{what} did not run: {e}"));
    if !out.status.success() {
        panic!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Connection;

    #[tokio::test]
    async fn a_private_server_stops_and_starts_again_with_its_data() {
        let pg = PrivatePostgres::start().await;
        let url = pg.url("postgres");
        let mut conn = sqlx::PgConnection::connect(&url).await.expect("connects");
        sqlx::query("CREATE TABLE kept (n int)")
            .execute(&mut conn)
            .await
            .unwrap();
        drop(conn);
        pg.stop().await;
        assert!(
            sqlx::PgConnection::connect(&url).await.is_err(),
            "down while stopped"
        );
        pg.restart().await;
        let mut conn = sqlx::PgConnection::connect(&url)
            .await
            .expect("connects again");
        sqlx::query("SELECT * FROM kept")
            .execute(&mut conn)
            .await
            .expect("data kept");
    }
}
