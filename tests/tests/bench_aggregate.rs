//! `make bench`'s last step, `bench/aggregate.py`: one table from the benchmarks' own result
//! files, each ratio with the baseline its column names, the machine and the versions.
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the repo")
        .to_path_buf()
}

/// Runs the aggregator over `files` (name, content) and `runs` (the tsv of `bench/all.sh`).
fn aggregate(files: &[(&str, &str)], runs: &str) -> String {
    let dir = std::env::temp_dir().join(format!(
        "swappo-bench-aggregate-{}-{}",
        std::process::id(),
        files.len()
    ));
    let results = dir.join("results");
    std::fs::create_dir_all(&results).unwrap();
    for (name, text) in files {
        std::fs::write(results.join(name), text).unwrap();
    }
    std::fs::write(dir.join("runs.tsv"), runs).unwrap();
    let out = results.join("README.md");
    let status = Command::new("python3")
        .current_dir(repo_root())
        .arg("bench/aggregate.py")
        .arg("--results")
        .arg(&results)
        .arg("--runs")
        .arg(dir.join("runs.tsv"))
        .arg("--out")
        .arg(&out)
        .status()
        .expect("python3 runs");
    assert!(status.success(), "aggregate.py failed");
    let text = std::fs::read_to_string(&out).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    text
}

const CONSUMER: &str = "# Consumer benchmark: queue to committed rows\n\n\
- Date: 2026-11-27 07:00 UTC\n\n\
| consumer | queue | events/s | seconds | rows stored | left in queue | vs seed | RSS |\n\
|---|---|---:|---:|---:|---:|---:|---|\n\
| seed consumer.py | classic | 240 | 83.2 | 20000 | 0 | 1.0x | - |\n\
| swappo-notifications | classic | 9000 | 2.2 | 20000 | 0 | 37.5x | 20 MiB |\n";

const PUBLISHER: &str = "# Publisher benchmark\n\n\
| | |\n|---|---|\n| machine | settings tables carry no figure |\n\n\
| queue | tool | msg/s (median) | runs | vs seed --confirm | vs PerfTest |\n\
|---|---|---:|---|---:|---:|\n\
| quorum | swappo-messaging | 12,000 | 11000, 12000 | 40.0x | 0.8x |\n\
| quorum | RabbitMQ PerfTest | 11,000 | 11000 |  |  |\n";

#[test]
fn each_case_is_listed_with_its_figure_and_its_ratio_against_each_baseline_its_columns_name() {
    let text = aggregate(
        &[("consumer.md", CONSUMER), ("publisher.md", PUBLISHER)],
        "bench-consumer\t0\t120\n",
    );
    for row in [
        "| Consumer benchmark | swappo-notifications / classic | 9000 events/s | 37.5x vs seed | 2026-11-27 07:00 UTC |",
        "| Consumer benchmark | seed consumer.py / classic | 240 events/s | 1.0x vs seed |",
        "| Publisher benchmark | quorum / swappo-messaging | 12,000 msg/s (median) | 40.0x vs seed --confirm; 0.8x vs PerfTest |",
        "| Publisher benchmark | quorum / RabbitMQ PerfTest | 11,000 msg/s (median) | reference |",
    ] {
        assert!(text.contains(row), "missing {row} in:\n{text}");
    }
    let summary = text.split("## Each benchmark's own report").next().unwrap();
    assert!(
        !summary.contains("settings tables carry no figure"),
        "a settings table is not a result:\n{text}"
    );
    // The machine and versions head the page; each report follows in full.
    for want in [
        "| machine |",
        "| RabbitMQ |",
        "| PostgreSQL |",
        "| Kubernetes |",
        "| Rust |",
        "## Consumer benchmark",
    ] {
        assert!(text.contains(want), "missing {want} in:\n{text}");
    }
}

#[test]
fn a_failed_benchmark_run_is_shown_as_failed() {
    let text = aggregate(
        &[("consumer.md", CONSUMER)],
        "bench-consumer\t0\t120\nbench-publisher\t2\t30\n",
    );
    assert!(
        text.contains("| `make bench-publisher` | FAILED (exit 2) | 30 |"),
        "{text}"
    );
    assert!(
        text.contains("| `make bench-consumer` | ok | 120 |"),
        "{text}"
    );
}
