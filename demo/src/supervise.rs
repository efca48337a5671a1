//! The stand-in for the kubelet: keeps as many local notifications consumers running as the
//! `notifications-service` Deployment has replicas (kwok's pods only pretend to run), so the
//! operator's scaling really changes how fast the queue drains.
use crate::procs::{Proc, ProcError, Spec};
use std::path::PathBuf;
use std::time::Duration;

/// Local consumers wanted for the Deployment's `spec.replicas`: the replicas, at most `cap`
/// (each local process competes for the same two cores as everything else). An unknown
/// replica count (the Deployment cannot be read) keeps `current`.
pub fn wanted(replicas: Option<i32>, current: usize, cap: usize) -> usize {
    match replicas {
        Some(r) => usize::try_from(r.max(0)).unwrap_or(0).min(cap),
        None => current,
    }
}

/// Seconds a consumer gets to finish and ack its batch after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// The consumers, numbered from 0; scaling down stops the highest numbers first.
pub struct Supervisor {
    dir: PathBuf,
    spec_for: Box<dyn Fn(usize) -> Spec + Send>,
    running: Vec<Proc>,
    /// Consumers that exited on their own (a crash), restarted since.
    pub restarts: u64,
}

impl Supervisor {
    /// A supervisor starting consumer `i` from `spec_for(i)`, logging into `dir`.
    pub fn new(dir: PathBuf, spec_for: impl Fn(usize) -> Spec + Send + 'static) -> Self {
        Self {
            dir,
            spec_for: Box::new(spec_for),
            running: Vec::new(),
            restarts: 0,
        }
    }

    /// Consumers running now.
    pub fn count(&self) -> usize {
        self.running.len()
    }

    /// Whether every consumer still runs.
    pub fn alive(&mut self) -> bool {
        self.running.iter_mut().all(Proc::is_running)
    }

    /// Starts or stops consumers until `target` run; restarts any that died.
    pub async fn converge(&mut self, target: usize) -> Result<(), ProcError> {
        for i in 0..self.running.len() {
            if !self.running[i].is_running() {
                let spec = (self.spec_for)(i);
                self.running[i] = Proc::start(&spec, &self.dir)?;
                self.restarts += 1;
            }
        }
        while self.running.len() < target {
            let spec = (self.spec_for)(self.running.len());
            self.running.push(Proc::start(&spec, &self.dir)?);
        }
        while self.running.len() > target {
            if let Some(p) = self.running.pop() {
                p.stop(STOP_GRACE).await;
            }
        }
        Ok(())
    }

    /// Stops every consumer, all at once, each with its grace period.
    pub async fn stop_all(&mut self) {
        futures::future::join_all(self.running.drain(..).map(|p| p.stop(STOP_GRACE))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_local_consumer_per_replica_up_to_the_cap() {
        assert_eq!(wanted(Some(1), 0, 4), 1);
        assert_eq!(wanted(Some(3), 1, 4), 3);
        assert_eq!(wanted(Some(10), 3, 4), 4);
    }

    #[test]
    fn scaled_to_zero_runs_none_and_an_unknown_count_keeps_what_runs() {
        assert_eq!(wanted(Some(0), 2, 4), 0);
        assert_eq!(wanted(Some(-1), 2, 4), 0);
        assert_eq!(wanted(None, 2, 4), 2);
    }

    #[tokio::test]
    async fn converging_starts_and_stops_the_highest_numbered_first() {
        let dir = std::env::temp_dir().join(format!("swappo-demo-sup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut s = Supervisor::new(dir.clone(), |i| Spec {
            name: format!("c{i}"),
            program: "sleep".into(),
            args: vec!["600".into()],
            env: vec![],
        });
        s.converge(3).await.unwrap();
        assert_eq!(s.count(), 3);
        s.converge(1).await.unwrap();
        assert_eq!(s.count(), 1);
        assert!(dir.join("c0.pid").exists() && !dir.join("c2.pid").exists());
        s.stop_all().await;
        assert_eq!(s.count(), 0);
        assert!(!dir.join("c0.pid").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
