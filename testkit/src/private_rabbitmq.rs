//! A RabbitMQ node of one test's own, for broker-wide faults: a memory alarm
//! (`connection.blocked`) forced on the shared broker would stall every other test's
//! publishers, whatever their vhost.
//!
//! The installed Debian `rabbitmq-server` is started under a unique Erlang node name
//! (`RABBITMQ_NODENAME`), on free loopback ports, with its own data, log and config
//! directory and no plugins; `/etc/rabbitmq` is not read. `guest` may log in from loopback.
//! The node is stopped and its directory removed on drop.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the Debian package keeps the scripts that run as the calling user (the
/// `/usr/sbin` wrappers switch to the `rabbitmq` user). `RABBITMQ_BIN_DIR` overrides.
const DEFAULT_BIN_DIR: &str = "/usr/lib/rabbitmq/bin";
/// How long the node may take to boot: ~5 s on an idle 2-core machine, more under load.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// The high watermark restored after an alarm: RabbitMQ's default.
const DEFAULT_WATERMARK: &str = "0.4";

/// A private RabbitMQ node; stopped and deleted on drop.
pub struct PrivateRabbitMq {
    dir: PathBuf,
    node: String,
    port: u16,
    bin_dir: PathBuf,
    server: Option<Child>,
}

impl PrivateRabbitMq {
    /// Starts a node and waits until it accepts connections; panics with the reason (and
    /// the node's output) when it cannot.
    pub fn start() -> Self {
        let bin_dir = PathBuf::from(
            std::env::var("RABBITMQ_BIN_DIR").unwrap_or_else(|_| DEFAULT_BIN_DIR.into()),
        );
        assert!(
            bin_dir.join("rabbitmq-server").exists(),
            "no rabbitmq-server in {} (run `make testenv-deps`)",
            bin_dir.display()
        );
        let name = crate::unique_name("swappo-rmq-");
        let dir = std::env::temp_dir().join(&name);
        for sub in ["home", "mnesia", "log", "conf.d"] {
            std::fs::create_dir_all(dir.join(sub)).expect("create the private rabbitmq dirs");
        }
        let port = free_port();
        let dist_port = free_port();
        std::fs::write(dir.join("enabled_plugins"), "[].\n").expect("write enabled_plugins");
        std::fs::write(
            dir.join("rabbitmq.conf"),
            format!("listeners.tcp.default = 127.0.0.1:{port}\nloopback_users = none\n"),
        )
        .expect("write rabbitmq.conf");
        let mut node = Self {
            node: format!("{name}@localhost"),
            dir,
            port,
            bin_dir,
            server: None,
        };
        let log = std::fs::File::create(node.dir.join("server.out")).expect("create server.out");
        let server = node
            .command("rabbitmq-server")
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", port.to_string())
            .env("RABBITMQ_DIST_PORT", dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", node.dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", node.dir.join("log"))
            .env("RABBITMQ_CONFIG_FILE", node.dir.join("rabbitmq.conf"))
            .env("RABBITMQ_CONFIG_FILES", node.dir.join("conf.d"))
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                node.dir.join("enabled_plugins"),
            )
            .env("RABBITMQ_PID_FILE", node.dir.join("pid"))
            .current_dir(&node.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("rabbitmq-server did not start: {e}"));
        node.server = Some(server);
        node.wait_started();
        node
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/%2f`.
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// The loopback AMQP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Forces the memory alarm on (the high watermark set to 0: every publishing connection
    /// is blocked) or clears it (the default watermark again).
    pub fn set_memory_alarm(&self, on: bool) {
        let watermark = if on { "0" } else { DEFAULT_WATERMARK };
        self.ctl(&["set_vm_memory_high_watermark", watermark]);
    }

    /// Whether the node reports a memory alarm right now.
    pub fn memory_alarm(&self) -> bool {
        let out = self.ctl(&["eval", "rabbit_alarm:get_alarms()."]);
        out.contains("memory")
    }

    /// Runs `rabbitmqctl -n <node> -q <args>`, panicking with its output when it fails.
    pub fn ctl(&self, args: &[&str]) -> String {
        let out = self
            .command("rabbitmqctl")
            .args(["-n", &self.node, "-q"])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("rabbitmqctl did not run: {e}"));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "rabbitmqctl {args:?} failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    }

    fn command(&self, script: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(script));
        // Its own Erlang cookie (in HOME) and no /etc/rabbitmq/rabbitmq-env.conf.
        cmd.env("HOME", self.dir.join("home"))
            .env("RABBITMQ_CONF_ENV_FILE", "/dev/null")
            .env("RABBITMQ_NODENAME", &self.node);
        cmd
    }

    fn wait_started(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            // await_startup fails at once while the node is not registered yet: poll it.
            let ok = self
                .command("rabbitmqctl")
                .args(["-n", &self.node, "-q", "--timeout", "30", "await_startup"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            let exited = self
                .server
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                let out = std::fs::read_to_string(self.dir.join("server.out")).unwrap_or_default();
                let tail: String = out
                    .lines()
                    .rev()
                    .take(20)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n");
                panic!("private rabbitmq node {} did not start:\n{tail}", self.node);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The node's directory (data, logs, config).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for PrivateRabbitMq {
    fn drop(&mut self) {
        let _ = self
            .command("rabbitmqctl")
            .args(["-n", &self.node, "-q", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some(mut server) = self.server.take() {
            // `stop` ends the node; a node that did not listen is killed by its own pid.
            if server.try_wait().ok().flatten().is_none() {
                let deadline = Instant::now() + Duration::from_secs(30);
                while server.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(100));
                }
                if server.try_wait().ok().flatten().is_none() {
                    let _ = server.kill();
                    let _ = server.wait();
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port nothing listens on right now (the OS picks it; released before use).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}
