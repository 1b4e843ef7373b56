//! Real brokers for the integration tests: started on a free loopback port, stopped when the
//! guard is dropped. (`scripts/setup.sh` installs them.)

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a broker may take to accept connections before the test gives up.
const START_LIMIT: Duration = Duration::from_secs(20);

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free loopback port").port()
}

/// Waits until something accepts TCP connections on `port`, or `child` exits.
fn wait_for_port(port: u16, child: &mut Child, log: &Path) {
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("broker exited ({status}) before listening on {port}:\n{log}");
        }
        assert!(started.elapsed() < START_LIMIT, "broker not listening on {port} after {START_LIMIT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `mosquitto` program: on the PATH, or where Debian puts it (`/usr/sbin`, which is not on
/// an ordinary user's PATH).
fn mosquitto() -> PathBuf {
    let debian = Path::new("/usr/sbin/mosquitto");
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("mosquitto"))
        .find(|p| p.is_file());
    on_path.unwrap_or_else(|| debian.to_path_buf())
}

/// Sluice's mosquitto plugin for ThingsBoard devices' `v1/devices/me/…`, compiled from its
/// source (once per test binary) with the system's C compiler and mosquitto's headers
/// (`scripts/setup.sh --test-brokers` installs them).
pub fn token_plugin() -> &'static Path {
    static PLUGIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PLUGIN.get_or_init(|| {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let source = repo.join("examples/deploy/mosquitto/sluice_token_topics.c");
        let dir = repo.join("target").join("sluice-mosquitto-plugin");
        std::fs::create_dir_all(&dir).expect("plugin directory");
        // One file per test process: another test binary may be loading its copy right now.
        let out = dir.join(format!("sluice_token_topics-{}.so", std::process::id()));
        let built = Command::new("cc")
            .args(["-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o"])
            .arg(&out)
            .arg(&source)
            .output()
            .expect("cannot run cc: install a C compiler");
        assert!(
            built.status.success(),
            "building {} failed (mosquitto's headers: scripts/setup.sh --test-brokers):\n{}",
            source.display(),
            String::from_utf8_lossy(&built.stderr)
        );
        // mosquitto drops to its own user: the plugin must be readable by everyone.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        out
    })
}

/// Extra `mosquitto.conf` lines: a TLS listener.
pub struct TlsListener {
    pub port: u16,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Debian's `mosquitto`, on its own port and directory.
pub struct Mosquitto {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Mosquitto {
    /// A broker that keeps nothing across restarts.
    pub fn start() -> Mosquitto {
        Self::with(false, None)
    }

    /// A broker that saves its sessions (subscriptions, queued QoS 1 messages) on a clean stop
    /// and restores them on [`Mosquitto::restart`], as a production broker does.
    pub fn start_persistent() -> Mosquitto {
        Self::with(true, None)
    }

    /// A broker with a TLS listener besides the plain one.
    pub fn start_with_tls(tls: TlsListener) -> Mosquitto {
        Self::with(false, Some(tls))
    }

    /// A broker with Sluice's token plugin loaded (`examples/deploy/mosquitto`): what a client
    /// publishes to `v1/devices/me/telemetry` goes on as `v1/tokens/{its user name}/telemetry`.
    pub fn start_with_token_plugin() -> Mosquitto {
        Self::with_plugin(false, None, Some(token_plugin()))
    }

    fn with(persistent: bool, tls: Option<TlsListener>) -> Mosquitto {
        Self::with_plugin(persistent, tls, None)
    }

    fn with_plugin(persistent: bool, tls: Option<TlsListener>, plugin: Option<&'static Path>) -> Mosquitto {
        let dir = tempfile::tempdir().expect("tempdir");
        // Run as root, mosquitto drops to its own user, which must be able to write here.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
        }
        let port = free_port();
        let mut conf = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nlog_dest stderr\npersistence {persistent}\n\
             persistence_location {}/\n",
            dir.path().display()
        );
        if let Some(plugin) = plugin {
            conf.push_str(&format!("plugin {}\n", plugin.display()));
        }
        if let Some(tls) = &tls {
            conf.push_str(&format!(
                "listener {} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n",
                tls.port,
                tls.ca.display(),
                tls.cert.display(),
                tls.key.display()
            ));
        }
        std::fs::write(dir.path().join("mosquitto.conf"), conf).expect("write mosquitto.conf");
        let mut broker = Mosquitto { port, child: None, dir };
        broker.launch();
        if let Some(tls) = &tls {
            let log = broker.log_path();
            wait_for_port(tls.port, broker.child.as_mut().expect("running"), &log);
        }
        broker
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("mosquitto.log")
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).expect("log file");
        let mut child = Command::new(mosquitto())
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("cannot start mosquitto: run scripts/setup.sh");
        wait_for_port(self.port, &mut child, &self.log_path());
        self.child = Some(child);
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Stops the broker the way a service manager does (SIGTERM: a persistent broker saves its
    /// sessions) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }

    /// Starts the stopped broker again, on the same port.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart a stopped broker");
        self.launch();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
