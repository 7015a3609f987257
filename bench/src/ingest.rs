//! Cloud ingest throughput.
//!
//! Gantry: N robots' uplinks — the edge's own code: outbox in SQLite, rumqttc,
//! QoS 1, 16 in flight — drain prefilled outboxes of real log batches (cut by
//! the recorder on a simulated run) into cloud sync, through the embedded
//! broker (front + rumqttd) or Mosquitto. The clock runs from the uplinks'
//! start until the cloud has verified, stored (object store + catalog) and
//! acknowledged every batch.
//!
//! Peer: the same broker moving the same number of messages of the same mean
//! size from N `mosquitto_pub -l` (QoS 1, 16 in flight) to one `mosquitto_sub`
//! (QoS 1) — the broker alone, with nothing stored.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use gantry_config::cloud::BrokerMode;
use gantry_config::wire::{self, BatchHeader};
use gantry_config::{CloudConfig, EdgeConfig};
use gantry_edge::record::catalog::Catalog;
use gantry_edge::uplink;
use gantry_sync::Service;
use gantry_tests::{free_port, Mosquitto};
use tokio::sync::watch;

/// Which broker carries the traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broker {
    /// Cloud sync's own: the authorizing front and rumqttd, with credentials.
    Embedded,
    /// Mosquitto, started here on a free loopback port; cloud sync subscribes
    /// as an external-broker instance (shared subscription).
    Mosquitto,
}

impl Broker {
    pub fn name(self) -> &'static str {
        match self {
            Broker::Embedded => "embedded broker",
            Broker::Mosquitto => "Mosquitto",
        }
    }
}

/// Messages moved end to end, and how long it took.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    pub messages: u64,
    pub bytes: u64,
    pub seconds: f64,
}

impl Throughput {
    pub fn messages_per_s(&self) -> f64 {
        self.messages as f64 / self.seconds
    }

    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.seconds
    }
}

/// Log batches as a robot's recorder cuts them: the outbox of a simulated run.
pub struct Samples(Vec<(BatchHeader, Vec<u8>)>);

impl Samples {
    pub fn from_simulated_run(dir: &Path, minutes: f64) -> anyhow::Result<Self> {
        crate::recorder::simulated_run(dir, minutes)?;
        let catalog = Catalog::open(&dir.join("catalog.sqlite"))?;
        let mut batches = Vec::new();
        for (_, _, payload) in catalog.outbox_next(&Default::default(), usize::MAX)? {
            let (header, body) = wire::decode(&payload)?;
            batches.push((header, body.to_vec()));
        }
        anyhow::ensure!(!batches.is_empty(), "the simulated run queued no log batches");
        // In the order the recorder cut them (the outbox hands them out by priority).
        batches.sort_by_key(|(h, _)| h.seq);
        Ok(Self(batches))
    }

    /// Mean size of a batch on the wire.
    pub fn mean_bytes(&self) -> usize {
        let total: usize = self.0.iter().map(|(h, b)| wire::encode(h.clone(), b).len()).sum();
        total / self.0.len()
    }

    /// Batches per kind (incidents, health, logs) and their mean size on the wire.
    pub fn composition(&self) -> [(usize, usize); 3] {
        let mut out = [(0, 0); 3];
        for (h, b) in &self.0 {
            let k = &mut out[h.kind as usize];
            k.0 += 1;
            k.1 += wire::encode(h.clone(), b).len();
        }
        out.map(|(n, bytes)| (n, bytes / n.max(1)))
    }

    /// Queues `n` batches in `robot`'s outbox under its own sequence numbers,
    /// the recorded sequence from `offset` on, wrapping; returns their bytes.
    fn fill_outbox(&self, robot: &str, catalog: &mut Catalog, offset: usize, n: usize) -> anyhow::Result<u64> {
        let mut bytes = 0;
        for (header, body) in self.0.iter().cycle().skip(offset % self.0.len()).take(n) {
            let kind = header.kind as u8;
            catalog.outbox_push(kind, header.start_unix_ns, |seq| {
                let mut h = header.clone();
                h.robot_id = robot.to_string();
                h.seq = seq;
                let payload = wire::encode(h, body);
                bytes += payload.len() as u64;
                payload
            })?;
        }
        Ok(bytes)
    }
}

fn robot_id(i: usize) -> String {
    format!("robot-{i}")
}

const OBSERVER: (&str, &str) = ("bench", "bench-password");

fn robot_password(i: usize) -> String {
    format!("password-{i}")
}

/// A running broker and the cloud sync service on it.
struct Cloud {
    service: Service,
    mqtt_port: u16,
    _mosquitto: Option<Mosquitto>,
}

/// Starts them in `work`, emptied first.
async fn start_cloud(work: &Path, broker: Broker, robots: usize) -> anyhow::Result<Cloud> {
    let _ = std::fs::remove_dir_all(work);
    std::fs::create_dir_all(work)?;
    let mut config = CloudConfig::default();
    config.service.data_dir = work.join("cloud").display().to_string();
    config.http.listen = "127.0.0.1:0".into();
    match broker {
        Broker::Embedded => {
            let mut creds = String::from("[robots]\n");
            for i in 0..robots {
                creds.push_str(&format!("{} = \"{}\"\n", robot_id(i), robot_password(i)));
            }
            creds.push_str(&format!("[observers]\n{} = \"{}\"\n", OBSERVER.0, OBSERVER.1));
            let path = work.join("broker-credentials.toml");
            std::fs::write(&path, creds)?;
            config.broker.mode = BrokerMode::Embedded;
            config.broker.listen = "127.0.0.1:0".into();
            config.broker.credentials_path = path.display().to_string();
            let service = Service::start(&config).await?;
            let mqtt_port = service.mqtt_addr.context("embedded broker address")?.port();
            Ok(Cloud { service, mqtt_port, _mosquitto: None })
        }
        Broker::Mosquitto => {
            let port = free_port();
            let mosquitto = Mosquitto::start_persistent(port, &work.join("mosquitto"))?;
            config.broker.mode = BrokerMode::External;
            config.broker.url = format!("mqtt://127.0.0.1:{port}");
            let service = Service::start(&config).await?;
            Ok(Cloud { service, mqtt_port: port, _mosquitto: Some(mosquitto) })
        }
    }
}

/// Gantry's ingest: `robots` uplinks, `per_robot` batches each.
pub async fn gantry(
    work: &Path,
    broker: Broker,
    robots: usize,
    per_robot: usize,
    samples: &Samples,
) -> anyhow::Result<Throughput> {
    let cloud = start_cloud(work, broker, robots).await?;
    let mut configs = Vec::new();
    let mut bytes = 0;
    for i in 0..robots {
        let mut c = EdgeConfig::default();
        c.robot.id = robot_id(i);
        c.robot.data_dir = work.join(&c.robot.id).display().to_string();
        std::fs::create_dir_all(&c.robot.data_dir)?;
        c.uplink.broker_url = format!("mqtt://127.0.0.1:{}", cloud.mqtt_port);
        c.uplink.catchup_rate_kbps = 1_000_000;
        if broker == Broker::Embedded {
            let path = PathBuf::from(&c.robot.data_dir).join("mqtt-credentials.toml");
            std::fs::write(&path, format!("username = \"{}\"\npassword = \"{}\"\n", c.robot.id, robot_password(i)))?;
            c.uplink.credentials_path = path.display().to_string();
        }
        let mut catalog = Catalog::open(&PathBuf::from(&c.robot.data_dir).join("catalog.sqlite"))?;
        // Robots at different points of the recording: a fleet's mix, not one robot's burst.
        let offset = i * samples.0.len() / robots;
        bytes += samples.fill_outbox(&c.robot.id, &mut catalog, offset, per_robot)?;
        configs.push(c);
    }
    let total = (robots * per_robot) as u64;
    let ingest = cloud.service.ingest.clone();
    let (stop, stopped) = watch::channel(false);
    let start = Instant::now();
    let uplinks: Vec<_> = configs
        .into_iter()
        .map(|c| {
            let cx = uplink::Context {
                upload_window: watch::channel(None).0,
                sync: Default::default(),
                pipeline: Default::default(),
                model: watch::channel(Default::default()).1,
                assignment: watch::channel(None).0,
                tasks: None,
            };
            tokio::spawn(uplink::run(c, cx, stopped.clone()))
        })
        .collect();
    let deadline = start + Duration::from_secs(600);
    let mut progress = start;
    while ingest.stored.load(Relaxed) < total {
        if progress.elapsed() > Duration::from_secs(10) {
            progress = Instant::now();
            eprintln!("ingest: {} of {total} stored", ingest.stored.load(Relaxed));
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{}: only {} of {total} batches stored after 10 minutes",
            broker.name(),
            ingest.stored.load(Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seconds = start.elapsed().as_secs_f64();
    anyhow::ensure!(ingest.rejected() == 0, "{}: the cloud rejected {} batches", broker.name(), ingest.rejected());
    let _ = stop.send(true);
    for u in uplinks {
        let _ = u.await;
    }
    cloud.service.stop().await;
    Ok(Throughput { messages: total, bytes, seconds })
}

/// The peer: `mosquitto_pub` × `robots` → broker → one `mosquitto_sub`,
/// `per_robot` messages of `size` bytes each.
pub async fn raw(
    work: &Path,
    broker: Broker,
    robots: usize,
    per_robot: usize,
    size: usize,
) -> anyhow::Result<Throughput> {
    let cloud = start_cloud(work, broker, robots).await?;
    // `mosquitto_pub -l` sends each line of its input as a message, with up to
    // `-M` in flight (`--repeat` would wait for each PUBACK): `per_robot` lines
    // of `size` random printable bytes.
    let payload = work.join("messages.txt");
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut text = Vec::with_capacity((size + 1) * per_robot);
    for _ in 0..per_robot {
        text.extend((0..size).map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            b'!' + (state % 94) as u8
        }));
        text.push(b'\n');
    }
    std::fs::write(&payload, text)?;
    let port = cloud.mqtt_port;
    let total = robots * per_robot;
    let seconds =
        tokio::task::spawn_blocking(move || mosquitto_clients(port, broker, robots, total, &payload)).await??;
    cloud.service.stop().await;
    Ok(Throughput { messages: total as u64, bytes: (total * size) as u64, seconds })
}

fn mosquitto_clients(port: u16, broker: Broker, robots: usize, total: usize, payload: &Path) -> anyhow::Result<f64> {
    let port = port.to_string();
    let login = |cmd: &mut Command, user: &str, password: &str| {
        if broker == Broker::Embedded {
            cmd.args(["-u", user, "-P", password]);
        }
    };
    let topic = |id: &str| format!("gantry/{id}/bench");
    // One line per message (topic and length); stdbuf keeps the pipe line-buffered.
    let mut sub = Command::new("stdbuf");
    sub.args(["-oL", "mosquitto_sub", "-h", "127.0.0.1", "-p", &port, "-i", OBSERVER.0, "-q", "1"]).args([
        "-t",
        "gantry/+/bench",
        "-t",
        "gantry/+/probe",
        "-F",
        "%t %l",
    ]);
    login(&mut sub, OBSERVER.0, OBSERVER.1);
    let mut sub = sub
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("mosquitto_sub not found: `apt-get install -y mosquitto-clients`")?;
    let lines = BufReader::new(sub.stdout.take().context("mosquitto_sub stdout")?).lines();
    let (first_tx, first_rx) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn(move || -> (usize, Instant) {
        let mut seen = 0;
        for line in lines.map_while(Result::ok) {
            if line.contains("/probe ") {
                let _ = first_tx.send(());
            } else if line.contains("/bench ") {
                seen += 1;
                if seen == total {
                    break;
                }
            }
        }
        (seen, Instant::now())
    });
    let run = |cmd: &mut Command| cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn();
    // The subscription is live once a probe comes through.
    let mut probes = 0;
    loop {
        let mut probe = Command::new("mosquitto_pub");
        let probe_topic = format!("gantry/{}/probe", robot_id(0));
        probe.args(["-h", "127.0.0.1", "-p", &port, "-i", &robot_id(0), "-q", "1", "-m", "probe", "-t", &probe_topic]);
        login(&mut probe, &robot_id(0), &robot_password(0));
        run(&mut probe).context("mosquitto_pub not found")?.wait()?;
        probes += 1;
        if first_rx.recv_timeout(Duration::from_millis(100)).is_ok() {
            break;
        }
        anyhow::ensure!(probes < 100, "mosquitto_sub never received a probe");
    }
    let start = Instant::now();
    let mut pubs = Vec::new();
    for i in 0..robots {
        let id = robot_id(i);
        let mut cmd = Command::new("mosquitto_pub");
        cmd.args(["-h", "127.0.0.1", "-p", &port, "-i", &id, "-q", "1", "-M", "16", "-t", &topic(&id), "-l"]);
        login(&mut cmd, &id, &robot_password(i));
        cmd.stdin(std::fs::File::open(payload)?);
        pubs.push(run(&mut cmd).context("mosquitto_pub not found")?);
    }
    for mut p in pubs {
        let s = p.wait()?;
        anyhow::ensure!(s.success(), "mosquitto_pub failed: {s}");
    }
    let (received, end) = reader.join().map_err(|_| anyhow::anyhow!("the subscriber's reader panicked"))?;
    let _ = sub.kill();
    let _ = sub.wait();
    anyhow::ensure!(received == total, "mosquitto_sub received {received} of {total} messages");
    Ok(end.duration_since(start).as_secs_f64())
}

/// Both measurements on one broker, as (Gantry, peer).
/// Gantry's ingest and, where `mosquitto_pub` and `mosquitto_sub` run, the
/// raw broker beside it (`None`, with one line on stderr, where they do not).
pub fn measure(
    work: &Path,
    broker: Broker,
    robots: usize,
    per_robot: usize,
    samples: &Samples,
) -> anyhow::Result<(Throughput, Option<Throughput>)> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let g = gantry(&work.join("gantry"), broker, robots, per_robot, samples).await?;
        let r = match raw(&work.join("raw"), broker, robots, per_robot, samples.mean_bytes()).await {
            Ok(r) => Some(r),
            Err(e) => {
                eprintln!(
                    "ingest peer ({}): {e:#} (apt-get install mosquitto-clients); its figures are left out",
                    broker.name()
                );
                None
            }
        };
        Ok((g, r))
    })
}

/// A fleet at its real rates, from protocol-level robots.
#[derive(Debug, Clone)]
pub struct FleetLoad {
    pub robots: usize,
    pub seconds: f64,
    pub published: u64,
    pub stored: u64,
    /// Batches per second published, all robots.
    pub offered_per_s: f64,
    /// Publish to the broker's PUBACK, as a robot sees it (its outbox lets go then).
    pub puback_ms: [f64; 2],
    /// Publish to ingestion taking the batch up (the catalog row's receipt time).
    pub stored_ms: [f64; 2],
    /// The cloud's own receipt → commit (then the acknowledgement), p50 and
    /// p99 as its histogram's bucket bounds.
    pub commit_ms: [f64; 2],
    /// How long after the last publish the last batch was stored.
    pub drain_s: f64,
}

/// `robots` protocol-level robots (an MQTT connection each, no pipelines)
/// publishing the recorded batches at a robot's real rates — a log batch
/// every `uplink.batch_period_s`, a health batch every `health.period_s`, an
/// incident batch a minute — for `seconds`, each robot at its own phase.
/// Time-to-ack is measured twice: to the broker's PUBACK and to the catalog row.
pub fn fleet_load(
    work: &Path,
    broker: Broker,
    robots: usize,
    seconds: f64,
    samples: &Samples,
) -> anyhow::Result<FleetLoad> {
    raise_fd_limit(robots * 6 + 1024);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(fleet_load_async(work, broker, robots, seconds, samples))
}

/// Each robot's connection costs descriptors on both sides (and the
/// embedded broker's front two more): the default soft limit of 1024 is too few.
fn raise_fd_limit(want: usize) {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit on a valid struct for this process.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && (lim.rlim_cur as usize) < want {
            lim.rlim_cur = (want as libc::rlim_t).min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

async fn fleet_load_async(
    work: &Path,
    broker: Broker,
    robots: usize,
    seconds: f64,
    samples: &Samples,
) -> anyhow::Result<FleetLoad> {
    use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, Outgoing, QoS};
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    let cloud = start_cloud(work, broker, robots).await?;
    let edge = EdgeConfig::default();
    let periods = [
        Duration::from_secs(60),
        Duration::from_secs(edge.health.period_s),
        Duration::from_secs(edge.uplink.batch_period_s),
    ];
    // One body per kind, hashed once; each robot stamps its own header.
    let mut bodies: [Option<(BatchHeader, Vec<u8>)>; 3] = [None, None, None];
    for (h, b) in &samples.0 {
        bodies[h.kind as usize].get_or_insert_with(|| (h.clone(), b.clone()));
    }
    let bodies: Arc<Vec<(BatchHeader, Vec<u8>)>> =
        Arc::new(bodies.into_iter().map(|b| b.expect("the sample has every kind")).collect());
    // (robot, seq) → wall-clock ns of the publish.
    let sent: Arc<Mutex<HashMap<(usize, u64), u64>>> = Arc::default();
    let puback = Arc::new(Mutex::new(hdrhistogram::Histogram::<u64>::new(3)?));
    let (stop, stopped) = watch::channel(false);
    let connected = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    let mut clients = Vec::new();
    for i in 0..robots {
        let id = robot_id(i);
        let mut o = MqttOptions::new(&id, "127.0.0.1", cloud.mqtt_port);
        o.set_max_packet_size(2 << 20, 2 << 20);
        o.set_inflight(16);
        o.set_keep_alive(Duration::from_secs(30));
        if broker == Broker::Embedded {
            o.set_credentials(&id, robot_password(i));
        }
        let (client, mut events) = AsyncClient::new(o, 16);
        clients.push(client);
        let (puback, mut stopped_ev, connected) = (puback.clone(), stopped.clone(), connected.clone());
        tasks.push(tokio::spawn(async move {
            let mut at: HashMap<u16, Instant> = HashMap::new();
            loop {
                let event = tokio::select! {
                    e = events.poll() => e,
                    _ = stopped_ev.wait_for(|s| *s) => break,
                };
                match event {
                    Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                        connected.fetch_add(1, Relaxed);
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                        at.insert(pkid, Instant::now());
                    }
                    Ok(Event::Incoming(Incoming::PubAck(a))) => {
                        if let Some(t) = at.remove(&a.pkid) {
                            let us = t.elapsed().as_micros() as u64;
                            puback.lock().unwrap_or_else(|e| e.into_inner()).record(us.max(1)).ok();
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        }));
    }
    // The clock starts once the whole fleet is connected.
    let deadline = Instant::now() + Duration::from_secs(120);
    while connected.load(Relaxed) < robots {
        anyhow::ensure!(Instant::now() < deadline, "only {} of {robots} robots connected", connected.load(Relaxed));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let start = Instant::now();
    let (stop_publishing, publishing_stopped) = watch::channel(false);
    let mut publishers = Vec::new();
    for (i, client) in clients.into_iter().enumerate() {
        let (bodies, sent, mut stopped_pub) = (bodies.clone(), sent.clone(), publishing_stopped.clone());
        // Spread each robot's phases over its periods.
        let phase = |p: Duration| p.mul_f64(((i * 7919) % 1000) as f64 / 1000.0);
        let mut next: Vec<Instant> = periods.iter().map(|p| start + phase(*p)).collect();
        publishers.push(tokio::spawn(async move {
            let mut seq = 0u64;
            loop {
                let (k, when) =
                    next.iter().enumerate().min_by_key(|(_, t)| **t).map(|(k, t)| (k, *t)).unwrap_or((2, start));
                tokio::select! {
                    _ = tokio::time::sleep_until(when.into()) => {}
                    _ = stopped_pub.wait_for(|s| *s) => break,
                }
                next[k] += periods[k];
                seq += 1;
                let (header, body) = &bodies[k];
                let mut h = header.clone();
                h.robot_id = robot_id(i);
                h.seq = seq;
                let leaf = h.kind.topic_leaf();
                let payload = wire::encode(h, body);
                sent.lock().unwrap_or_else(|e| e.into_inner()).insert((i, seq), gantry_hal::clock::unix_ns());
                if client.publish(wire::topic(&robot_id(i), leaf), QoS::AtLeastOnce, false, payload).await.is_err() {
                    break;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    // The publishers stop first; the connections stay up until every batch
    // they sent is stored.
    let _ = stop_publishing.send(true);
    for p in publishers {
        let _ = p.await;
    }
    let published = sent.lock().unwrap_or_else(|e| e.into_inner()).len() as u64;
    let stopped_at = Instant::now();
    let ingest = cloud.service.ingest.clone();
    let deadline = stopped_at + Duration::from_secs(120);
    while ingest.stored.load(Relaxed) + ingest.duplicates.load(Relaxed) < published && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let drain_s = stopped_at.elapsed().as_secs_f64();
    let _ = stop.send(true);
    for t in tasks {
        let _ = t.await;
    }
    let mut to_store = hdrhistogram::Histogram::<u64>::new(3)?;
    let sent = sent.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut cursor = 0;
    let mut stored = 0;
    loop {
        let rows = cloud.service.catalog.segments_since(cursor, 10_000)?;
        let Some(last) = rows.last() else { break };
        cursor = last.cursor;
        for r in &rows {
            let Some(i) = r.robot_id.strip_prefix("robot-").and_then(|n| n.parse::<usize>().ok()) else { continue };
            if let Some(t) = sent.get(&(i, r.seq)) {
                stored += 1;
                to_store.record((r.received_unix_ns.saturating_sub(*t) / 1000).max(1)).ok();
            }
        }
    }
    let lag = &cloud.service.ingest.commit_lag;
    let commit_ms = [lag.quantile_bound(0.5) * 1e3, lag.quantile_bound(0.99) * 1e3];
    cloud.service.stop().await;
    let q = |h: &hdrhistogram::Histogram<u64>| {
        [h.value_at_quantile(0.5) as f64 / 1e3, h.value_at_quantile(0.99) as f64 / 1e3]
    };
    let puback = puback.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok(FleetLoad {
        robots,
        seconds,
        published,
        stored,
        offered_per_s: published as f64 / seconds,
        puback_ms: q(&puback),
        stored_ms: q(&to_store),
        commit_ms,
        drain_s,
    })
}
