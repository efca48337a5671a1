//! The images `make images` builds without Docker (images/build.sh) describe the same images as
//! the Dockerfiles a user builds elsewhere: for the operator and both services the run stage's
//! ENTRYPOINT, USER and EXPOSE equal the image config images/build.sh writes (images/*.json),
//! and, where the image has been built, the config inside its OCI tar. The RabbitMQ image keeps
//! the official `rabbitmq` image's contract (entrypoint, command, environment, ports).
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// (Dockerfile, image config written by images/build.sh, cached image tar name).
const APP_IMAGES: [(&str, &str, &str); 3] = [
    ("operator/Dockerfile", "images/operator.json", "operator"),
    (
        "services/matchmaking/Dockerfile",
        "images/matchmaking.json",
        "matchmaking",
    ),
    (
        "services/notifications/Dockerfile",
        "images/notifications.json",
        "notifications",
    ),
];

/// The run stage (after the last FROM) of a Dockerfile: (KEYWORD, arguments), continuation
/// lines joined, comments dropped.
fn run_stage(dockerfile: &str) -> Vec<(String, String)> {
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
        let keyword = keyword.to_ascii_uppercase();
        if keyword == "FROM" {
            out.clear();
        }
        out.push((keyword, args.trim().to_owned()));
        pending.clear();
    }
    out
}

/// The image config fields a Dockerfile's run stage sets, in OCI config form.
fn dockerfile_config(stage: &[(String, String)]) -> Value {
    let last = |k: &str| {
        stage
            .iter()
            .rev()
            .find(|(kw, _)| kw == k)
            .map(|(_, a)| a.clone())
    };
    let entrypoint: Value = serde_json::from_str(&last("ENTRYPOINT").expect("an ENTRYPOINT"))
        .expect("ENTRYPOINT in exec (JSON) form");
    let ports: serde_json::Map<String, Value> = stage
        .iter()
        .filter(|(k, _)| k == "EXPOSE")
        .flat_map(|(_, a)| a.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .map(|p| {
            let p = if p.contains('/') {
                p
            } else {
                format!("{p}/tcp")
            };
            (p, Value::Object(serde_json::Map::new()))
        })
        .collect();
    serde_json::json!({
        "User": last("USER").expect("a USER"),
        "Entrypoint": entrypoint,
        "ExposedPorts": ports,
    })
}

/// The `config` object of the image inside a cached OCI tar of images/build.sh, if built.
fn built_config(image: &str) -> Option<Value> {
    let cache = std::env::var_os("SWAPPO_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".cache/swappo")
        });
    let tar = cache.join("images").join(format!("{image}.tar"));
    if !tar.exists() {
        return None;
    }
    let member = |name: &str| -> Value {
        let out = std::process::Command::new("tar")
            .arg("-xOf")
            .arg(&tar)
            .arg(name)
            .output()
            .expect("tar runs");
        assert!(out.status.success(), "{} holds {name}", tar.display());
        serde_json::from_slice(&out.stdout).expect("JSON")
    };
    let blob = |digest: &Value| {
        let d = digest.as_str().expect("a digest");
        format!("blobs/sha256/{}", d.trim_start_matches("sha256:"))
    };
    let index = member("index.json");
    let manifest = member(&blob(&index["manifests"][0]["digest"]));
    let config = member(&blob(&manifest["config"]["digest"]));
    Some(config["config"].clone())
}

#[test]
fn each_local_service_image_has_its_dockerfiles_entrypoint_user_and_ports() {
    for (dockerfile, config, image) in APP_IMAGES {
        let want = dockerfile_config(&run_stage(&read(&repo().join(dockerfile))));
        let local: Value = serde_json::from_str(&read(&repo().join(config))).unwrap();
        assert_eq!(local, want, "{config} describes the image of {dockerfile}");
        if let Some(built) = built_config(image) {
            for key in ["User", "Entrypoint", "ExposedPorts"] {
                assert_eq!(built[key], want[key], "{key} of the built {image} image");
            }
        }
    }
}

#[test]
fn the_local_rabbitmq_image_keeps_the_official_images_entrypoint_environment_and_ports() {
    let config: Value =
        serde_json::from_str(&read(&repo().join("images/rabbitmq/config.json"))).unwrap();
    let configs = std::iter::once(config.clone()).chain(built_config("rabbitmq"));
    for c in configs {
        assert_eq!(c["Entrypoint"], serde_json::json!(["docker-entrypoint.sh"]));
        assert_eq!(c["Cmd"], serde_json::json!(["rabbitmq-server"]));
        // No User: the entrypoint starts as root, chowns the data dir and drops to 999 (or runs
        // as the pod's runAsUser 999 directly).
        assert!(c.get("User").is_none_or(Value::is_null), "{c}");
        // No Volumes: containerd would add an anonymous volume per pod.
        assert!(c.get("Volumes").is_none_or(Value::is_null), "{c}");
        let ports: BTreeSet<&str> = c["ExposedPorts"]
            .as_object()
            .expect("ports")
            .keys()
            .map(String::as_str)
            .collect();
        let official = [
            "4369/tcp",
            "5671/tcp",
            "5672/tcp",
            "15671/tcp",
            "15672/tcp",
            "15691/tcp",
            "15692/tcp",
            "25672/tcp",
        ];
        assert_eq!(ports, official.into_iter().collect());
        let env: Vec<&str> = c["Env"]
            .as_array()
            .expect("Env")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for var in [
            "RABBITMQ_DATA_DIR=/var/lib/rabbitmq",
            "HOME=/var/lib/rabbitmq",
            "LANG=C.UTF-8",
        ] {
            assert!(env.contains(&var), "{var} in {env:?}");
        }
        // Debian's /usr/sbin/rabbitmq-server wrapper sends the log to a file for the
        // rabbitmq uid; the real scripts come first, so the log goes to stdout.
        assert!(
            env.iter()
                .any(|e| e.starts_with("PATH=/usr/lib/rabbitmq/bin:")),
            "{env:?}"
        );
    }
    let defaults = read(&repo().join("images/rabbitmq/10-defaults.conf"));
    assert!(defaults.contains("log.console = true"));
    assert!(defaults.contains("loopback_users.guest = false"));
}
