//! The container images and the local-development compose file, checked without a Docker
//! engine (there is none on the build machines): the Dockerfiles build the crates' real
//! binaries and run them as non-root on a shell-less base, the build context keeps every
//! workspace member, and `docker-compose.yml` wires the broker, the database and both services
//! with variables the services really read.
use serde_yaml::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// The image of each crate: (Dockerfile, package, binary).
const IMAGES: [(&str, &str, &str); 3] = [
    ("operator/Dockerfile", "swappo-operator", "swappo-operator"),
    (
        "services/matchmaking/Dockerfile",
        "swappo-matchmaking",
        "swappo-matchmaking",
    ),
    (
        "services/notifications/Dockerfile",
        "swappo-notifications",
        "swappo-notifications",
    ),
];

/// Dockerfile instructions as (KEYWORD, arguments), continuation lines joined, comments out.
fn instructions(dockerfile: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in dockerfile.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && pending.is_empty()) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(trimmed);
        let (keyword, args) = pending.split_once(' ').unwrap_or((&pending, ""));
        out.push((keyword.to_ascii_uppercase(), args.trim().to_owned()));
        pending.clear();
    }
    out
}

/// The `[package] name` of a crate manifest.
fn package_name(manifest: &str) -> String {
    manifest
        .lines()
        .skip_while(|l| l.trim() != "[package]")
        .find_map(|l| l.trim().strip_prefix("name = "))
        .map(|n| n.trim_matches('"').to_owned())
        .expect("a [package] name")
}

#[test]
fn each_dockerfile_builds_its_crate_binary_and_runs_it_as_non_root_without_a_shell() {
    let rust_version = read("Cargo.toml")
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .map(|v| v.trim_matches('"').to_owned())
        .expect("the workspace's rust-version");
    for (path, package, binary) in IMAGES {
        let steps = instructions(&read(path));
        let froms: Vec<&str> = steps
            .iter()
            .filter(|(k, _)| k == "FROM")
            .map(|(_, a)| a.as_str())
            .collect();
        assert_eq!(froms.len(), 2, "{path}: a build stage and a run stage");
        assert_eq!(
            froms[0],
            format!("rust:{rust_version}-bookworm AS build"),
            "{path}: built with the workspace's toolchain"
        );
        assert_eq!(
            froms[1], "gcr.io/distroless/cc-debian12:nonroot",
            "{path}: a shell-less runtime base"
        );

        // The build compiles exactly this crate's binary, from the locked dependencies.
        let build = steps
            .iter()
            .find(|(k, a)| k == "RUN" && a.contains("cargo build"))
            .map(|(_, a)| a.as_str())
            .unwrap_or_else(|| panic!("{path}: no cargo build"));
        for flag in [
            "--release",
            "--locked",
            &format!("-p {package}"),
            &format!("--bin {binary}"),
        ] {
            assert!(build.contains(flag), "{path}: cargo build lacks {flag}");
        }
        let crate_dir = Path::new(path).parent().unwrap().to_str().unwrap();
        assert_eq!(
            package_name(&read(&format!("{crate_dir}/Cargo.toml"))),
            package,
            "{path}: the package it builds is the crate beside it"
        );

        // The run stage: nothing executed in it (no shell there), a numeric non-root user
        // (Kubernetes' runAsNonRoot can only verify a number), an exec-form entrypoint.
        let run_stage: Vec<&(String, String)> = steps
            .iter()
            .skip_while(|(k, a)| !(k == "FROM" && a.starts_with("gcr.io/distroless")))
            .collect();
        assert!(
            run_stage.iter().all(|(k, _)| k != "RUN"),
            "{path}: RUN in the runtime stage needs a shell"
        );
        let user = run_stage
            .iter()
            .find(|(k, _)| k == "USER")
            .map(|(_, a)| a.as_str());
        assert_eq!(user, Some("65532:65532"), "{path}");
        let entrypoint = run_stage
            .iter()
            .find(|(k, _)| k == "ENTRYPOINT")
            .map(|(_, a)| a.as_str())
            .unwrap_or_else(|| panic!("{path}: no ENTRYPOINT"));
        let argv: Vec<String> = serde_json::from_str(entrypoint)
            .unwrap_or_else(|e| panic!("{path}: ENTRYPOINT is not exec form: {e}"));
        assert_eq!(argv, [format!("/usr/local/bin/{binary}")], "{path}");
        let copied = run_stage
            .iter()
            .find(|(k, _)| k == "COPY")
            .map(|(_, a)| a.as_str())
            .unwrap_or_default();
        assert_eq!(
            copied,
            format!("--from=build /out/{binary} /usr/local/bin/{binary}"),
            "{path}"
        );
    }
}

#[test]
fn the_build_context_keeps_every_workspace_member_and_leaves_out_build_output() {
    let ignore = read(".dockerignore");
    let patterns: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for excluded in ["target", ".git", "charts"] {
        assert!(
            patterns.contains(&excluded),
            "{excluded} is sent to the builder"
        );
    }
    let workspace = read("Cargo.toml");
    let members: Vec<String> = workspace
        .split("members = [")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .expect("workspace members")
        .split(',')
        .map(|m| m.trim().trim_matches('"').to_owned())
        .filter(|m| !m.is_empty())
        .collect();
    assert!(members.len() >= 5, "{members:?}");
    for member in &members {
        for pattern in &patterns {
            let p = pattern.trim_start_matches("**/").trim_end_matches("/**");
            let first = member.split('/').next().unwrap();
            assert!(
                p != member && p != first && p != "Cargo.toml" && p != "Cargo.lock",
                ".dockerignore pattern {pattern} drops workspace member {member} (cargo needs every member)"
            );
        }
    }
}

fn compose() -> Value {
    let mut doc: Value = serde_yaml::from_str(&read("docker-compose.yml")).expect("YAML");
    doc.apply_merge().expect("merge keys resolve");
    doc
}

fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_mapping()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            let value = match v {
                Value::String(s) => s.clone(),
                other => {
                    panic!("environment value {other:?} is not a string (compose needs quotes)")
                }
            };
            (k.as_str().unwrap().to_owned(), value)
        })
        .collect()
}

/// Seconds of a compose duration such as `10s` or `1m`.
fn seconds(duration: &Value) -> u64 {
    let s = duration.as_str().expect("a duration string");
    match s.strip_suffix('m') {
        Some(m) => m.parse::<u64>().unwrap() * 60,
        None => s.trim_end_matches('s').parse().unwrap(),
    }
}

#[test]
fn compose_runs_the_broker_the_database_and_both_services_started_in_order() {
    let doc = compose();
    let services = &doc["services"];
    let names: Vec<&str> = services
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap())
        .collect();
    for name in ["rabbitmq", "postgres", "matchmaking", "notifications"] {
        assert!(names.contains(&name), "no {name} in {names:?}");
    }
    assert_eq!(services["rabbitmq"]["image"], "rabbitmq:3.13-management");
    assert_eq!(services["postgres"]["image"], "postgres:15");

    // The broker's probe starts an Erlang VM each time: never a timeout under 10 s (DESIGN §4).
    let probe = &services["rabbitmq"]["healthcheck"];
    assert_eq!(probe["test"][0], "CMD");
    assert_eq!(probe["test"][1], "rabbitmq-diagnostics");
    assert!(seconds(&probe["timeout"]) >= 10, "{probe:?}");
    assert!(services["postgres"]["healthcheck"]["test"][1] == "pg_isready");

    for (service, dockerfile) in [
        ("matchmaking", "services/matchmaking/Dockerfile"),
        ("notifications", "services/notifications/Dockerfile"),
    ] {
        let s = &services[service];
        assert_eq!(s["build"]["context"], ".", "{service}");
        assert_eq!(s["build"]["dockerfile"], dockerfile, "{service}");
        assert!(repo().join(dockerfile).exists());
        for dependency in ["rabbitmq", "postgres"] {
            assert_eq!(
                s["depends_on"][dependency]["condition"], "service_healthy",
                "{service} waits for a healthy {dependency}"
            );
        }
        assert_eq!(s["read_only"], true, "{service}");
        assert_eq!(s["cap_drop"][0], "ALL", "{service}");
        // Published on loopback only, to the container port the service listens on.
        let port = s["ports"][0].as_str().unwrap();
        assert!(
            port.starts_with("127.0.0.1:") && port.ends_with(":8080"),
            "{port}"
        );
    }
    assert_eq!(
        services["matchmaking"]["depends_on"]["notifications"]["condition"],
        "service_started"
    );
}

#[test]
fn compose_gives_each_service_its_own_database_and_the_same_broker_login() {
    let doc = compose();
    let services = &doc["services"];
    let mm = string_map(&services["matchmaking"]["environment"]);
    let nt = string_map(&services["notifications"]["environment"]);
    let pg = string_map(&services["postgres"]["environment"]);
    let rabbit = string_map(&services["rabbitmq"]["environment"]);

    // Separate databases: both services keep a _sqlx_migrations table.
    let db = |url: &str| url.rsplit('/').next().unwrap().to_owned();
    assert_eq!(db(&mm["DATABASE_URL"]), "matchmaking");
    assert_eq!(db(&nt["DATABASE_URL"]), "notifications");
    assert_eq!(pg["POSTGRES_DB"], "matchmaking");
    let init = read("hack/compose/postgres-init.sql");
    assert!(init.contains("CREATE DATABASE notifications"), "{init}");
    let mounted = services["postgres"]["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .any(|v| v.starts_with("./hack/compose/postgres-init.sql:/docker-entrypoint-initdb.d/"));
    assert!(mounted, "the init script is mounted");
    for env in [&mm, &nt] {
        let url = &env["DATABASE_URL"];
        let login = format!(
            "{}:{}@postgres:5432/",
            pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"]
        );
        assert!(url.contains(&login), "{url}");
        assert_eq!(env["RABBITMQ_HOST"], "rabbitmq");
        assert_eq!(env["RABBITMQ_USER"], rabbit["RABBITMQ_DEFAULT_USER"]);
        assert_eq!(env["RABBITMQ_PASSWORD"], rabbit["RABBITMQ_DEFAULT_PASS"]);
    }
    // Publisher and consumer agree on the queue; without an operator the consumer declares it.
    assert_eq!(mm["NOTIFICATIONS_QUEUE"], nt["QUEUE_NAME"]);
    assert_eq!(nt["DECLARE_QUEUE"], "true");
}

/// Every `env = "NAME"` (clap) or quoted `RABBITMQ_*` name a crate's sources read.
fn variables_read_by(sources: &[&str]) -> Vec<String> {
    let mut names = Vec::new();
    for path in sources {
        let text = read(path);
        for piece in text.split('"').skip(1).step_by(2) {
            if !piece.is_empty()
                && piece
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            {
                names.push(piece.to_owned());
            }
        }
    }
    names
}

#[test]
fn compose_sets_only_variables_the_services_read() {
    let doc = compose();
    let broker = "services/messaging/src/config.rs";
    for (service, config) in [
        ("matchmaking", "services/matchmaking/src/config.rs"),
        ("notifications", "services/notifications/src/config.rs"),
    ] {
        let known = variables_read_by(&[config, broker]);
        for name in string_map(&doc["services"][service]["environment"]).keys() {
            // RUST_LOG is read by tracing's EnvFilter, not by the service's config.
            if name == "RUST_LOG" {
                continue;
            }
            assert!(
                known.contains(name),
                "{service}: {name} is not read by {config} (typo, or a renamed setting?)"
            );
        }
    }
}

/// The compose clients this machine has that answer `version`: Debian's `docker-compose`
/// (installed by `make testenv-deps`) and the docker CLI's compose plugin. A `docker` without
/// the plugin answers "unknown command" or, for older CLIs, "unknown shorthand flag"; probing
/// `version` first tells every such form apart from a client that rejects the file.
fn compose_clients() -> Vec<Vec<&'static str>> {
    let candidates: [&[&'static str]; 2] = [&["docker-compose"], &["docker", "compose"]];
    candidates
        .into_iter()
        .filter(|argv| {
            std::process::Command::new(argv[0])
                .args(&argv[1..])
                .arg("version")
                .output()
                .is_ok_and(|out| out.status.success())
        })
        .map(<[&str]>::to_vec)
        .collect()
}

#[test]
fn docker_compose_itself_accepts_the_file_where_it_is_installed() {
    // Validation by the real tool needs no engine: `config -q` only parses and checks the
    // schema. `make test` installs Debian's docker-compose (scripts/testenv-deps.sh) and sets
    // SWAPPO_REQUIRE_TOOLS=1, so there the check always runs; elsewhere it says it skipped.
    let clients = compose_clients();
    let Some(argv) = clients.first() else {
        assert!(
            std::env::var_os("SWAPPO_REQUIRE_TOOLS").is_none(),
            "no compose client (docker-compose, docker compose): run `make testenv-deps`"
        );
        eprintln!(
            "SKIPPED: no docker-compose client here (`make testenv-deps` installs one): \
             docker-compose.yml checked by the other tests only"
        );
        return;
    };
    let out = std::process::Command::new(argv[0])
        .args(&argv[1..])
        .args(["-f", "docker-compose.yml", "config", "-q"])
        .current_dir(repo())
        .output()
        .expect("the compose client runs");
    assert!(
        out.status.success(),
        "{} rejects docker-compose.yml:\n{}",
        argv.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_compose_client_rejects_a_broken_file_so_its_check_means_something() {
    let Some(argv) = compose_clients().into_iter().next() else {
        eprintln!("SKIPPED: no docker-compose client here (`make testenv-deps` installs one)");
        return;
    };
    let dir = std::env::temp_dir().join(format!("swappo-compose-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let broken = dir.join("docker-compose.yml");
    std::fs::write(
        &broken,
        "services:\n  a:\n    image: x\n    depends_on:\n      b:\n        condition: nonsense\n",
    )
    .unwrap();
    let out = std::process::Command::new(argv[0])
        .args(&argv[1..])
        .args(["-f", broken.to_str().unwrap(), "config", "-q"])
        .output()
        .expect("the compose client runs");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        !out.status.success(),
        "{} accepted a file with an invalid depends_on condition",
        argv.join(" ")
    );
}
