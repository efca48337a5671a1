//! `make demo-check`: the whole `make demo`, unattended for 35 s of load (its outage drill
//! closes the services' broker connections at 30 s), in a namespace and on ports of its own,
//! against the real local control plane, broker and database.
//!
//! Ignored in `make test` (it runs the operator, matchmaking and the consumers as processes
//! for about a minute, and needs their binaries built first: `make demo-check` builds them,
//! then runs this with `--ignored`).
use std::io::Read;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Failure guard only: a healthy run takes about a minute.
const GUARD: Duration = Duration::from_secs(300);
/// Ports of this run (operator +0, matchmaking +1, consumers +10..): not the demo's defaults.
const PORT_BASE: u16 = 18180;

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

#[test]
#[ignore = "runs the whole demo for about a minute with prebuilt binaries: make demo-check"]
fn an_unattended_demo_with_a_broker_outage_stores_every_published_event_and_leaves_nothing_running()
{
    let state = std::env::temp_dir().join(format!("swappo-demo-check-{}", std::process::id()));
    let mut child = Command::new("bash")
        .arg(repo_root().join("scripts/demo.sh"))
        .env("DEMO_DURATION", "35")
        .env("DEMO_OUTAGE", "true")
        .env("DEMO_SKIP_BUILD", "1")
        .env("DEMO_NAMESPACE", "swappo-demo-check")
        .env("DEMO_PORT_BASE", PORT_BASE.to_string())
        .env("DEMO_STATE_DIR", &state)
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
            // SIGTERM to the whole group: the script's trap stops what the demo started.
            let _ = Command::new("kill")
                .args(["-TERM", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
            panic!("the demo did not finish within {}s", GUARD.as_secs());
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let out = reader.join().expect("stdout reader");
    println!("{out}");

    assert!(status.success(), "the demo exited with {status}");
    let published = summary_number(&out, "events published").expect("a published count");
    let stored = summary_number(&out, "events stored").expect("a stored count");
    assert!(published > 0, "the load published nothing:\n{out}");
    assert_eq!(summary_number(&out, "lost"), Some(0), "{out}");
    assert_eq!(summary_number(&out, "left unsent"), Some(0), "{out}");
    assert_eq!(
        published,
        stored + summary_number(&out, "events dead-lettered").unwrap_or(0)
    );
    assert!(out.contains("result: OK"), "{out}");
    assert!(
        out.contains("outage drill: t=") && out.contains("closed"),
        "the drill ran:\n{out}"
    );

    // Nothing the demo started still runs: no live pid file, no port still answering.
    for entry in std::fs::read_dir(&state).expect("the state dir exists") {
        let path = entry.expect("a dir entry").path();
        if path.extension().is_some_and(|e| e == "pid") {
            let pid = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                !Path::new(&format!("/proc/{}", pid.trim())).exists(),
                "{} still runs (pid {})",
                path.display(),
                pid.trim()
            );
        }
    }
    for offset in [0, 1, 10, 11, 12, 13] {
        let addr = format!("127.0.0.1:{}", PORT_BASE + offset);
        assert!(
            TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(1)).is_err(),
            "something still listens on {addr}"
        );
    }
    let _ = std::fs::remove_dir_all(&state);
}
