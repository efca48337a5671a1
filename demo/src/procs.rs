//! Local processes the demo starts (the operator, matchmaking, notifications consumers) and
//! stops again, each in its own process group, logging to a file, with a pid file so that
//! `scripts/demo.sh` can clean up even if this process is killed outright.
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::process::{Child, Command};

/// Why a process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The log file could not be created.
    #[error("creating log file {path}: {source}")]
    Log {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The program could not be executed.
    #[error("starting {program}: {source}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What to start.
#[derive(Clone, Debug)]
pub struct Spec {
    /// A short unique name: the log is `<name>.log`, the pid file `<name>.pid`.
    pub name: String,
    /// The executable.
    pub program: PathBuf,
    /// Its arguments (never secrets: they show in `ps`).
    pub args: Vec<String>,
    /// Extra environment (secrets go here).
    pub env: Vec<(String, String)>,
}

/// A running child process.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Child,
    pid_file: PathBuf,
}

impl Proc {
    /// Starts `spec` in a new process group (a Ctrl-C in the terminal reaches only the demo,
    /// which then stops its children in order), logging to `<dir>/<name>.log`.
    pub fn start(spec: &Spec, dir: &Path) -> Result<Proc, ProcError> {
        let log_path = dir.join(format!("{}.log", spec.name));
        let log = std::fs::File::create(&log_path).map_err(|source| ProcError::Log {
            path: log_path.clone(),
            source,
        })?;
        let err = log.try_clone().map_err(|source| ProcError::Log {
            path: log_path.clone(),
            source,
        })?;
        let child = Command::new(&spec.program)
            .args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0)
            // A last resort if the demo itself panics: never leave a child behind.
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| ProcError::Spawn {
                program: spec.program.clone(),
                source,
            })?;
        let pid_file = dir.join(format!("{}.pid", spec.name));
        if let Some(pid) = child.id() {
            // Best effort: the pid file only serves the shell's clean-up trap.
            let _ = std::fs::write(&pid_file, format!("{pid}\n"));
        }
        Ok(Proc {
            name: spec.name.clone(),
            child,
            pid_file,
        })
    }

    /// The name given at start.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the process has not exited yet.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM to the process group and waits up to `grace` for the exit (a service
    /// finishes and acks the batch in hand); then SIGKILL. Returns the exit status if known.
    pub async fn stop(mut self, grace: Duration) -> Option<ExitStatus> {
        let status = match self.child.try_wait() {
            Ok(Some(status)) => Some(status),
            _ => {
                if let Some(pid) = self.child.id() {
                    // `kill` from procps: std has no SIGTERM and unsafe code is forbidden.
                    let _ = Command::new("kill")
                        .args(["-TERM", "--", &format!("-{pid}")])
                        .stderr(Stdio::null())
                        .status()
                        .await;
                }
                match tokio::time::timeout(grace, self.child.wait()).await {
                    Ok(status) => status.ok(),
                    Err(_) => {
                        let _ = self.child.kill().await;
                        self.child.wait().await.ok()
                    }
                }
            }
        };
        let _ = std::fs::remove_file(&self.pid_file);
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_started_process_logs_to_its_file_and_stops_on_sigterm() {
        let dir = std::env::temp_dir().join(format!("swappo-demo-procs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let spec = Spec {
            name: "sleeper".into(),
            program: "sh".into(),
            args: vec!["-c".into(), "echo started; exec sleep 600".into()],
            env: vec![],
        };
        let mut p = Proc::start(&spec, &dir).unwrap();
        assert!(p.is_running());
        assert!(dir.join("sleeper.pid").exists());
        // Let the child write its line first: a SIGTERM sent before `sh` ran `echo` would
        // leave an empty log (seen under load). Bounded: 10 s.
        for _ in 0..200 {
            if std::fs::read_to_string(dir.join("sleeper.log")).is_ok_and(|l| l.contains("started"))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let status = p
            .stop(Duration::from_secs(10))
            .await
            .expect("an exit status");
        assert!(!status.success(), "ended by a signal");
        assert!(!dir.join("sleeper.pid").exists(), "pid file removed");
        let log = std::fs::read_to_string(dir.join("sleeper.log")).unwrap();
        assert!(log.contains("started"), "{log}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_missing_program_is_reported_by_name() {
        let spec = Spec {
            name: "nothing".into(),
            program: "/nonexistent/swappo-nothing".into(),
            args: vec![],
            env: vec![],
        };
        let e = Proc::start(&spec, &std::env::temp_dir()).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/swappo-nothing"), "{e}");
    }
}
