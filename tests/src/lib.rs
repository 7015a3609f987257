//! Shared set-up for the end-to-end tests and the ingest benchmark: a cloud
//! sync service, robots and a Mosquitto broker on loopback, with every port
//! chosen by the OS.

pub mod browser;
pub mod faults;
pub mod protocol_robot;
pub mod recording;

use std::path::Path;
use std::time::{Duration, Instant};

use gantry_config::cloud::BrokerMode;
use gantry_config::{CloudConfig, EdgeConfig};

/// A robot on the simulator, talking to `broker_url`, with short batches.
pub fn robot_config(id: &str, dir: &Path, broker_url: &str) -> EdgeConfig {
    let mut c = EdgeConfig::default();
    c.robot.id = id.into();
    c.robot.data_dir = dir.display().to_string();
    c.status_http.listen = "127.0.0.1:0".into();
    c.policy.model_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/baseline").into();
    c.policy.baseline_model_dir = c.policy.model_dir.clone();
    c.realtime.lock_memory = false;
    c.health.period_s = 1;
    c.recorder.episode_s = 5;
    c.uplink.broker_url = broker_url.into();
    c.uplink.batch_period_s = 1;
    c
}

/// A stopped robot's uplink, from its data directory: the last batch seq it
/// gave out, and the seqs still queued in its outbox.
pub fn edge_counters(dir: &Path) -> (u64, std::collections::BTreeSet<u64>) {
    use gantry_edge::record::catalog::{Catalog, BATCH_SEQ};
    let c = Catalog::open(&dir.join("catalog.sqlite")).unwrap();
    let pending = c.outbox_next(&Default::default(), 100_000).unwrap().into_iter().map(|(s, _, _)| s).collect();
    (c.counter(BATCH_SEQ).unwrap(), pending)
}

/// One cloud sync (embedded broker) and N simulated robots in this process:
/// `gantry-fleet`, and the fleet tests.
pub struct Fleet {
    pub service: gantry_sync::Service,
    pub robots: Vec<gantry_edge::daemon::Daemon>,
}

/// How to build a fleet.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    pub robots: u32,
    pub data_dir: std::path::PathBuf,
    /// The fleet's model-signing public key (hex or file), given to every robot.
    pub fleet_public_key: String,
    /// Lighter robots (320×240 camera, 424×240 depth) for many on one machine.
    pub light: bool,
    pub probation_s: u64,
    /// Cloud sync's HTTP and MQTT listeners (`127.0.0.1:0`: a free port each).
    pub cloud_http: String,
    pub cloud_mqtt: String,
}

impl Fleet {
    pub async fn start(o: &FleetOptions) -> anyhow::Result<Self> {
        let mut cloud = CloudConfig::default();
        cloud.service.data_dir = o.data_dir.join("cloud").display().to_string();
        cloud.broker.listen = o.cloud_mqtt.clone();
        cloud.http.listen = o.cloud_http.clone();
        let service = gantry_sync::Service::start(&cloud).await?;
        let mqtt = service.mqtt_addr.ok_or_else(|| anyhow::anyhow!("no embedded broker"))?;
        let mut robots = Vec::new();
        for i in 0..o.robots {
            let id = format!("robot-{i}");
            let mut c = robot_config(&id, &o.data_dir.join(&id), &format!("mqtt://{mqtt}"));
            c.uplink.http_url = format!("http://{}", service.http_addr);
            c.health.period_s = EdgeConfig::default().health.period_s;
            c.recorder.episode_s = EdgeConfig::default().recorder.episode_s;
            c.uplink.batch_period_s = EdgeConfig::default().uplink.batch_period_s;
            c.models.fleet_public_key = o.fleet_public_key.clone();
            c.models.probation_s = o.probation_s;
            if o.light {
                (c.camera.width, c.camera.height) = (320, 240);
                (c.depth.width, c.depth.height) = (424, 240);
            }
            robots
                .push(gantry_edge::daemon::Daemon::start(&c, gantry_hal::Pacing::RealTime, Default::default()).await?);
        }
        Ok(Self { service, robots })
    }

    /// Stops every robot at once, then the cloud.
    pub async fn stop(self) {
        let robots: Vec<_> = self.robots.into_iter().map(|r| tokio::spawn(r.stop())).collect();
        for r in robots {
            let _ = r.await;
        }
        self.service.stop().await;
    }
}

/// Cloud sync with its embedded broker on `mqtt_listen`, HTTP on a free port.
pub fn cloud_config(dir: &Path, mqtt_listen: &str) -> CloudConfig {
    let mut c = CloudConfig::default();
    c.service.data_dir = dir.display().to_string();
    c.broker.mode = BrokerMode::Embedded;
    c.broker.listen = mqtt_listen.into();
    c.http.listen = "127.0.0.1:0".into();
    c
}

/// Polls `cond` every 20 ms until it holds; panics with `what` after `limit`.
pub async fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Cloud storage as the lake tests use it: a SQLite catalog and a local
/// object store under `dir`, ingestion into them with the default quality
/// limits.
pub struct LakeCloud {
    pub catalog: std::sync::Arc<dyn gantry_sync::store::CloudCatalog>,
    pub store: std::sync::Arc<dyn object_store::ObjectStore>,
    pub ingest: gantry_sync::ingest::Ingest,
    pub limits: gantry_sync::quality::Limits,
}

pub fn lake_cloud(dir: &Path) -> LakeCloud {
    use std::sync::Arc;
    std::fs::create_dir_all(dir.join("objects")).unwrap();
    lake_cloud_on(
        Arc::new(gantry_sync::store::SqliteCatalog::open(&dir.join("catalog.sqlite")).unwrap()),
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.join("objects")).unwrap()),
    )
}

/// As [`lake_cloud`], on a given catalog (PostgreSQL's) and object store.
pub fn lake_cloud_on(
    catalog: std::sync::Arc<dyn gantry_sync::store::CloudCatalog>,
    store: std::sync::Arc<dyn object_store::ObjectStore>,
) -> LakeCloud {
    let limits: gantry_sync::quality::Limits = (&gantry_config::cloud::Quality::default()).into();
    let ingest = gantry_sync::ingest::Ingest {
        catalog: catalog.clone(),
        store: store.clone(),
        prefix: object_store::path::Path::default(),
        max_payload: 16 << 20,
        quality: limits,
        stats: std::sync::Arc::new(gantry_sync::ingest::IngestStats::default()),
        assignments: None,
    };
    LakeCloud { catalog, store, ingest, limits }
}

/// The Python with the lake's readers (DuckDB, polars, PySpark):
/// `GANTRY_LAKE_PYTHON`, which `scripts/test` sets from `scripts/lake-python.sh`.
pub fn lake_python() -> String {
    match std::env::var("GANTRY_LAKE_PYTHON") {
        Ok(p) if !p.is_empty() => p,
        _ => panic!(
            "GANTRY_LAKE_PYTHON is not set: run the tests with scripts/test, or set it to the python \
             that scripts/lake-python.sh prints"
        ),
    }
}

/// A free loopback port (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A Mosquitto broker on `port`, stopped when dropped.
pub struct Mosquitto {
    child: std::process::Child,
    _conf: tempfile::NamedTempFile,
}

impl Mosquitto {
    /// Mosquitto on `port`, its state persisted in `dir` so sessions and queued
    /// messages survive a graceful restart.
    pub fn start_persistent(port: u16, dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let conf = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\n\
             max_queued_messages 0\nmax_inflight_messages 0\n",
            dir.display()
        );
        Self::start_with(port, &conf)
    }

    /// Mosquitto with the configuration `conf` (which listens on `port`).
    pub fn start_with(port: u16, conf_text: &str) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        use std::io::Write;
        let mut conf = tempfile::NamedTempFile::new()?;
        conf.write_all(conf_text.as_bytes())?;
        let mut child = std::process::Command::new("mosquitto")
            .arg("-c")
            .arg(conf.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("mosquitto not found: `apt-get install -y mosquitto` (.ci/run installs it)")?;
        // Ready when it accepts connections.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline || child.try_wait()?.is_some() {
                let _ = child.kill();
                anyhow::bail!("mosquitto did not start on port {port}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self { child, _conf: conf })
    }

    /// SIGTERM: Mosquitto saves its sessions and exits.
    pub fn stop_gracefully(mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A PostgreSQL server (Debian's `postgresql`) on a free loopback port with
/// its data in a temporary directory; stopped when dropped. As root, the
/// server runs as the `postgres` user (it refuses to run as root).
pub struct Postgres {
    /// `postgres://gantry@127.0.0.1:PORT/postgres`, no password (trust on loopback).
    pub url: String,
    bin: std::path::PathBuf,
    data: std::path::PathBuf,
    as_postgres: bool,
    _dir: tempfile::TempDir,
}

impl Postgres {
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(None)
    }

    /// A server that takes TLS connections only, with this certificate and key (PEM).
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> anyhow::Result<Self> {
        Self::start_with(Some((cert_pem, key_pem)))
    }

    fn start_with(tls: Option<(&str, &str)>) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let mut bins: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
            .context("PostgreSQL not found: `apt-get install -y postgresql` (scripts/test installs it)")?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|b| b.join("pg_ctl").exists())
            .collect();
        bins.sort();
        let bin = bins.pop().context("no /usr/lib/postgresql/*/bin/pg_ctl")?;
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        // SAFETY: geteuid has no preconditions.
        let as_postgres = unsafe { libc::geteuid() } == 0;
        if as_postgres {
            let ok = std::process::Command::new("chown").arg("postgres:").arg(dir.path()).status()?.success();
            anyhow::ensure!(ok, "chown postgres {}", dir.path().display());
        }
        let port = free_port();
        let pg =
            Self { url: format!("postgres://gantry@127.0.0.1:{port}/postgres"), bin, data, as_postgres, _dir: dir };
        let initdb = pg
            .command("initdb")
            .arg("-D")
            .arg(&pg.data)
            .args(["-U", "gantry", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()?;
        anyhow::ensure!(initdb.status.success(), "initdb: {}", String::from_utf8_lossy(&initdb.stderr));
        // fsync off: the tests kill gantry-sync replicas, never the database.
        let mut options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50",
            pg.data.display()
        );
        if let Some((cert, key)) = tls {
            use std::os::unix::fs::PermissionsExt as _;
            let (cert_path, key_path) = (pg.data.join("server.crt"), pg.data.join("server.key"));
            std::fs::write(&cert_path, cert)?;
            std::fs::write(&key_path, key)?;
            std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600))?;
            // Plain TCP is refused: a client must come over TLS.
            std::fs::write(
                pg.data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
            )?;
            if pg.as_postgres {
                let ok = std::process::Command::new("chown")
                    .arg("postgres:")
                    .args([&cert_path, &key_path, &pg.data.join("pg_hba.conf")])
                    .status()?
                    .success();
                anyhow::ensure!(ok, "chown postgres the server's certificate");
            }
            options.push_str(" -c ssl=on");
        }
        let log = pg.data.join("server.log");
        let start = pg
            .command("pg_ctl")
            .arg("-D")
            .arg(&pg.data)
            .args(["-o", &options, "-w", "-l"])
            .arg(&log)
            .arg("start")
            .output()?;
        anyhow::ensure!(
            start.status.success(),
            "pg_ctl start: {} {}",
            String::from_utf8_lossy(&start.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Ok(pg)
    }

    fn command(&self, tool: &str) -> std::process::Command {
        let path = self.bin.join(tool);
        if self.as_postgres {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            std::process::Command::new(path)
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.command("pg_ctl").arg("-D").arg(&self.data).args(["-m", "immediate", "stop"]).output();
    }
}

/// An S3 API server (moto, from the lake readers' Python environment) on a
/// free loopback port, with one bucket; stopped when dropped.
pub struct S3Server {
    pub endpoint: String,
    child: std::process::Child,
}

impl S3Server {
    pub async fn start(bucket: &str) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let port = free_port();
        let mut child = std::process::Command::new(lake_python())
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("moto: run scripts/lake-python.sh (scripts/test does)")?;
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let http = reqwest::Client::new();
        loop {
            if let Ok(r) = http.put(format!("{endpoint}/{bucket}")).send().await {
                anyhow::ensure!(r.status().is_success(), "creating bucket {bucket}: {}", r.status());
                break;
            }
            if Instant::now() > deadline || child.try_wait()?.is_some() {
                let _ = child.kill();
                anyhow::bail!("moto did not start on port {port}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Self { endpoint, child })
    }

    /// The `AWS_*` settings `object_store` reads to use this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "gantry-test".into()),
            ("AWS_SECRET_ACCESS_KEY", "gantry-test".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A valid log batch of `robot` with sequence number `seq`: ten control
/// messages (JSON, not the protobuf schema: stored, and flagged).
pub fn log_batch(robot: &str, seq: u64) -> Vec<u8> {
    use gantry_edge::record::batch::Batcher;
    let mut b = Batcher::new(gantry_config::wire::BatchKind::Logs, 64_000, Duration::from_secs(5));
    for i in 0..10u64 {
        b.add(gantry_edge::record::CH_CONTROL, 1_700_000_000_000_000_000 + i, br#"{"seq":1}"#).unwrap();
    }
    b.cut().unwrap().unwrap().encode(robot, "seg-1", seq)
}

/// What the proxy does to one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Passes the connection untouched.
    Clean,
    /// Closes both sides after this many bytes from the client.
    Cut(u64),
    /// Flips the bits of the client's byte at this offset.
    Flip(u64),
    /// Closes both sides after this many bytes from the server.
    CutReply(u64),
}

/// A TCP proxy on loopback that damages connections, one fault per new
/// connection in order; connections after the last fault pass untouched.
pub struct FaultProxy {
    pub addr: std::net::SocketAddr,
    pub connections: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    pub async fn start(target: std::net::SocketAddr, faults: Vec<Fault>) -> anyhow::Result<Self> {
        use std::sync::atomic::Ordering::Relaxed;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = connections.clone();
        let task = tokio::spawn(async move {
            let mut faults = std::collections::VecDeque::from(faults);
            while let Ok((client, _)) = listener.accept().await {
                counter.fetch_add(1, Relaxed);
                let fault = faults.pop_front();
                let Ok(server) = tokio::net::TcpStream::connect(target).await else { continue };
                tokio::spawn(async move {
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let reply_limit = match fault {
                        Some(Fault::CutReply(at)) => at,
                        _ => u64::MAX,
                    };
                    let down = tokio::spawn(async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        let mut sent = 0u64;
                        while let Ok(n) = sr.read(&mut buf).await {
                            let n = (n as u64).min(reply_limit - sent) as usize;
                            if n == 0 || cw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                            sent += n as u64;
                        }
                        let _ = cw.shutdown().await;
                    });
                    let mut buf = vec![0u8; 16 * 1024];
                    let mut seen = 0u64;
                    loop {
                        let n = match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let mut n = n;
                        match fault {
                            Some(Fault::Cut(at)) if seen + n as u64 >= at => {
                                n = (at - seen) as usize;
                                let _ = sw.write_all(&buf[..n]).await;
                                down.abort();
                                return;
                            }
                            Some(Fault::Flip(at)) if (seen..seen + n as u64).contains(&at) => {
                                buf[(at - seen) as usize] ^= 0xFF;
                            }
                            _ => {}
                        }
                        seen += n as u64;
                        if sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = sw.shutdown().await;
                    let _ = down.await;
                });
            }
        });
        Ok(Self { addr, connections, task })
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Children of a test: the test binary re-executed with one `child_*` test
/// selected, which starts a daemon and prints `ready` (and what the parent
/// needs to reach it) on stdout.
pub mod child {
    use std::io::{BufRead, BufReader};
    use std::process::Child;
    use std::time::Duration;

    /// Called first in a child test: it dies with its parent, so a failed or
    /// killed test run leaves no daemon behind.
    pub fn die_with_parent() {
        // SAFETY: prctl with PR_SET_PDEATHSIG only sets this process's parent-death signal.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    }

    /// Waits up to 60 s for `child`'s `ready` line and returns what follows
    /// it. A thread keeps reading the child's output until it dies, so the
    /// child never writes into a closed pipe. A child that does not get
    /// ready is killed and the test fails.
    pub fn wait_ready(child: &mut Child, what: &str) -> String {
        let stdout = child.stdout.take().expect("the child's stdout is piped");
        let (ready_tx, ready) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // libtest has already written "test child_… ... " on this line.
                if let Some((_, rest)) = line.split_once("ready") {
                    let _ = ready_tx.send(rest.trim().to_string());
                }
            }
        });
        match ready.recv_timeout(Duration::from_secs(60)) {
            Ok(rest) => rest,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what} did not start within 60 s");
            }
        }
    }
}

/// A factory system's webhook receiver on loopback: answers 503 while `down`,
/// else 200, and counts the 2xx deliveries of each `Idempotency-Key`.
pub struct Webhook {
    pub url: String,
    pub down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Key → (accepted deliveries, the last body).
    pub accepted: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, (u32, serde_json::Value)>>>,
    pub refused: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Webhook {
    pub async fn start() -> anyhow::Result<Self> {
        use std::sync::atomic::Ordering::Relaxed;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/events", listener.local_addr()?);
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let accepted = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::new()));
        let refused = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (d, a, r) = (down.clone(), accepted.clone(), refused.clone());
        let handler = move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let (d, a, r) = (d.clone(), a.clone(), r.clone());
            async move {
                if d.load(Relaxed) {
                    r.fetch_add(1, Relaxed);
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                }
                let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                let body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                let mut a = a.lock().unwrap();
                let slot = a.entry(key).or_insert((0, serde_json::Value::Null));
                slot.0 += 1;
                slot.1 = body;
                axum::http::StatusCode::OK
            }
        };
        let app = axum::Router::new().route("/events", axum::routing::post(handler));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { url, down, accepted, refused, task })
    }

    /// Keys accepted so far, with how many times each.
    pub fn keys(&self) -> std::collections::BTreeMap<String, u32> {
        self.accepted.lock().unwrap().iter().map(|(k, (n, _))| (k.clone(), *n)).collect()
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TCP proxy on loopback that can cut the network: while `cut`, every
/// connection through it is closed and new ones are refused at once.
pub struct Partition {
    pub addr: std::net::SocketAddr,
    pub cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Connections passed through (not those refused while cut).
    pub connections: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Partition {
    pub async fn start(target: std::net::SocketAddr) -> anyhow::Result<Self> {
        use std::sync::atomic::Ordering::Relaxed;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = cut.clone();
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let passed = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if flag.load(Relaxed) {
                    continue;
                }
                let Ok(mut server) = tokio::net::TcpStream::connect(target).await else { continue };
                passed.fetch_add(1, Relaxed);
                let flag = flag.clone();
                tokio::spawn(async move {
                    let copy = tokio::io::copy_bidirectional(&mut client, &mut server);
                    let watch = async {
                        while !flag.load(Relaxed) {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    };
                    tokio::select! {
                        _ = copy => {}
                        _ = watch => {}
                    }
                });
            }
        });
        Ok(Self { addr, cut, connections, task })
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        self.task.abort();
    }
}
