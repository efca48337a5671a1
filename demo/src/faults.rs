//! The drill's faults, done for real: the I/O behind [`crate::drill::Fault`].
use crate::cluster::{self, PodRow};
use anyhow::{Context as _, bail};
use std::path::Path;
use tokio::process::Command;

/// Grace of the broker pod's deletion: one second, then the kubelet kills it (it allows at
/// least two). A crash, not a clean shutdown, yet never two brokers on one volume: the
/// workload starts the replacement only once this pod is gone.
const BROKER_KILL_GRACE_SECONDS: u32 = 1;

/// Deletes the broker pod `pod` (`kubectl delete pod --grace-period=1`).
pub async fn kill_broker_pod(
    client: &kube::Client,
    namespace: &str,
    pod: &PodRow,
) -> anyhow::Result<()> {
    cluster::delete_pod(client, namespace, &pod.name, BROKER_KILL_GRACE_SECONDS)
        .await
        .with_context(|| format!("deleting the broker pod {}", pod.name))
}

/// SIGKILLs the container of `pod` at once (`crictl stop --timeout 0`: no SIGTERM, so no
/// graceful finish of the batch in hand); the kubelet restarts it in the same pod.
pub async fn kill_container(crictl: &Path, socket: &Path, pod: &PodRow) -> anyhow::Result<()> {
    let Some(id) = &pod.container_id else {
        bail!("pod {} has no running container to kill", pod.name);
    };
    let out = Command::new(crictl)
        .arg("--runtime-endpoint")
        .arg(format!("unix://{}", socket.display()))
        .args(["--timeout", "10s", "stop", "--timeout", "0", id])
        .output()
        .await
        .with_context(|| format!("running {}", crictl.display()))?;
    if !out.status.success() {
        bail!(
            "crictl stop of {}'s container failed: {}",
            pod.name,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Restarts the PostgreSQL server in `data` in immediate mode (a crash: no checkpoint, every
/// connection cut, crash recovery at start). As root, through `runuser -u postgres` (the
/// server refuses to run as root). The server logs to `server.log` next to `data`, as
/// `scripts/demo.sh` started it (without a log file it would hold this call's output pipe).
pub async fn restart_database(bin_dir: &Path, data: &Path) -> anyhow::Result<()> {
    let pg_ctl = bin_dir.join("pg_ctl");
    let log = data
        .parent()
        .context("the data directory has a parent")?
        .join("server.log");
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&pg_ctl);
        c
    } else {
        Command::new(&pg_ctl)
    };
    let out = cmd
        .arg("-D")
        .arg(data)
        .arg("-l")
        .arg(&log)
        .args(["-m", "immediate", "-w", "-t", "60", "restart"])
        .output()
        .await
        .with_context(|| format!("running {}", pg_ctl.display()))?;
    if !out.status.success() {
        bail!(
            "pg_ctl restart failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}
