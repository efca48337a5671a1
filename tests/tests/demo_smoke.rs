//! `make demo-check`: the whole `make demo` on the real node, unattended, in a namespace and
//! with a database port of its own: the operator and services installed with helm as pods, the
//! outage drill (broker pod deleted, a consumer SIGKILLed mid-batch, the database restarted),
//! the account by event id, and nothing left installed or running afterwards.
//!
//! Ignored in `cargo test` (it installs charts and runs for minutes: 10 on a loaded 2-core
//! machine, where RabbitMQ's two boots take most of it), and needs
//! swappo-demo and the images built first: `make demo-check` builds them, then runs this with
//! `--ignored`).
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use swappo_testkit::node::kubectl;

/// Failure guard only: a healthy warm run took 10 minutes on a loaded 2-core machine.
const GUARD: Duration = Duration::from_secs(900);
/// This run's namespace and database port: not the demo's defaults, so a `make demo` running
/// at the same time is left alone.
const NAMESPACE: &str = "swappo-demo-check";
const PG_PORT: u16 = 15441;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the repo")
        .to_path_buf()
}

/// The number after `label` on its line of the summary.
fn summary_number(out: &str, label: &str) -> Option<i64> {
    out.lines()
        .find(|l| l.starts_with(label))?
        .trim_start_matches(label)
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[test]
fn summary_numbers_are_read_from_their_own_line() {
    let out =
        "events published          3111   (outbox...)\nlost                         0   (x)\n";
    assert_eq!(summary_number(out, "events published"), Some(3111));
    assert_eq!(summary_number(out, "lost"), Some(0));
    assert_eq!(summary_number(out, "events stored"), None);
}

#[tokio::test]
#[ignore = "installs the charts on the real node and runs the demo for minutes: make demo-check"]
async fn the_demo_on_the_real_node_survives_its_outage_drill_with_every_event_stored_once_and_leaves_nothing_behind()
 {
    let mut child = Command::new("bash")
        .arg(repo_root().join("scripts/demo.sh"))
        .env("DEMO_DURATION", "20")
        .env("DEMO_OUTAGE", "true")
        .env("DEMO_SKIP_BUILD", "1")
        .env("DEMO_NAMESPACE", NAMESPACE)
        .env("DEMO_PG_PORT", PG_PORT.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0)
        .spawn()
        .expect("bash runs scripts/demo.sh");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the demo") {
            break status;
        }
        if started.elapsed() > GUARD {
            // SIGTERM to the whole group: the script's trap removes what the demo installed.
            let _ = Command::new("kill")
                .args(["-TERM", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
            panic!("the demo did not finish within {}s", GUARD.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let out = reader.join().expect("stdout reader");
    println!("{out}");

    assert!(status.success(), "the demo exited with {status}");
    let published = summary_number(&out, "events published").expect("a published count");
    assert!(published > 0, "the load published nothing:\n{out}");
    assert_eq!(summary_number(&out, "lost"), Some(0), "{out}");
    assert_eq!(summary_number(&out, "left unsent"), Some(0), "{out}");
    assert_eq!(summary_number(&out, "ids stored twice"), Some(0), "{out}");
    assert_eq!(
        summary_number(&out, "ids never confirmed"),
        Some(0),
        "{out}"
    );
    assert!(out.contains("result: OK"), "{out}");
    for fault in [
        "broker pod killed",
        "consumer killed mid-batch",
        "database restarted",
    ] {
        assert!(
            out.lines().any(|l| l.starts_with("outage drill: ")
                && l.contains(fault)
                && l.contains("recovered in")),
            "the drill's '{fault}' recovered:\n{out}"
        );
    }
    // The live view showed the pods on the real node.
    assert!(out.contains("swappo-node-0"), "{out}");

    // Nothing left: the namespace (helm releases, pods, Secrets, the broker's claim), the
    // placement policy, the demo's database server.
    let ns = kubectl(&[
        "get",
        "namespace",
        NAMESPACE,
        "--ignore-not-found",
        "-o",
        "name",
    ])
    .await
    .expect("kubectl answers");
    assert_eq!(ns.trim(), "", "namespace {NAMESPACE} is still there");
    let policy = kubectl(&[
        "get",
        "mutatingadmissionpolicy",
        &format!("{NAMESPACE}-real-node-placement"),
        "--ignore-not-found",
        "-o",
        "name",
    ])
    .await
    .expect("kubectl answers");
    assert_eq!(policy.trim(), "", "the placement policy is still there");
    assert!(
        std::net::TcpStream::connect_timeout(
            &format!("127.0.0.1:{PG_PORT}").parse().unwrap(),
            Duration::from_secs(1)
        )
        .is_err(),
        "the demo's PostgreSQL still listens on {PG_PORT}"
    );
}
