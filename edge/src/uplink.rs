//! The MQTT uplink: streams the outbox's log batches to the broker, highest
//! priority (incidents) then oldest first, and deletes a batch only when the
//! broker has acknowledged it (QoS 1). Offline, batches wait in the outbox;
//! back online they go out at `uplink.catchup_rate_kbps`.
//!
//! Session: MQTT 3.1.1, persistent (clean session off), client id = robot id,
//! last will `offline` retained on `gantry/{robot}/status`. After a connection
//! error the client's own resend queue is dropped and every unacknowledged
//! batch is sent again from the outbox; the cloud deduplicates by (robot, seq).

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use gantry_config::wire::{self, BatchKind, ModelAssignment, ModelReport, UploadWindow};
use gantry_config::{task, EdgeConfig};
use rumqttc::{AsyncClient, Event, Incoming, LastWill, MqttOptions, Outgoing, QoS, TlsConfiguration, Transport};
use serde::Deserialize;
use tokio::sync::watch;

use crate::pipeline::PipelineStatus;
use crate::record::catalog::Catalog;
use crate::status::SyncStatus;
use crate::tasks::Executor;

/// The task state goes out at least this often, and on every change.
const STATE_EVERY: Duration = Duration::from_secs(task::STATE_PERIOD_S);

/// Batches published and not yet acknowledged, at most.
const WINDOW: usize = 16;

/// A robot started beside its broker does not warn about a refused connect
/// for this long.
const STARTUP_GRACE: Duration = Duration::from_secs(10);

/// The robot's MQTT credentials file (`uplink.credentials_path`, TOML).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub username: Option<String>,
    pub password: Option<String>,
    /// PEM file of the CA that signed the broker's certificate (mqtts://).
    pub ca_path: Option<String>,
    /// PEM client certificate and key, for brokers that authenticate robots by certificate.
    pub client_cert_path: Option<String>,
    pub client_key_path: Option<String>,
}

impl Credentials {
    pub fn load(path: &str) -> anyhow::Result<Self> {
        if path.is_empty() {
            return Ok(Self::default());
        }
        let text = std::fs::read_to_string(path).with_context(|| format!("uplink.credentials_path: reading {path}"))?;
        toml::from_str(&text).with_context(|| format!("uplink.credentials_path: {path}"))
    }
}

/// MQTT options for a robot.
pub fn mqtt_options(robot_id: &str, url: &str, creds: &Credentials) -> anyhow::Result<MqttOptions> {
    let addr = crate::daemon::broker_addr(url).with_context(|| format!("uplink.broker_url: cannot use {url:?}"))?;
    let (host, port) = addr.rsplit_once(':').context("broker address")?;
    let mut o = MqttOptions::new(robot_id, host, port.parse().context("broker port")?);
    o.set_clean_session(false);
    o.set_keep_alive(Duration::from_secs(10));
    o.set_max_packet_size(2 * 1024 * 1024, 2 * 1024 * 1024);
    o.set_inflight(WINDOW as u16 + 4);
    o.set_last_will(LastWill::new(wire::topic(robot_id, wire::STATUS), "offline", QoS::AtLeastOnce, true));
    if let (Some(u), Some(p)) = (&creds.username, &creds.password) {
        o.set_credentials(u, p);
    }
    if url.starts_with("mqtts://") || url.starts_with("ssl://") {
        let ca = match &creds.ca_path {
            Some(p) => std::fs::read(p).with_context(|| format!("reading the broker CA {p}"))?,
            None => anyhow::bail!("uplink.broker_url is mqtts:// but the credentials file names no ca_path"),
        };
        let client_auth = match (&creds.client_cert_path, &creds.client_key_path) {
            (Some(c), Some(k)) => Some((std::fs::read(c)?, std::fs::read(k)?)),
            _ => None,
        };
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Simple { ca, alpn: None, client_auth }));
    }
    Ok(o)
}

/// Byte budget for publishing: `rate` bytes per second, up to one second's worth saved.
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn take(&mut self, n: usize) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + self.rate * now.duration_since(self.at).as_secs_f64()).min(self.rate);
        self.at = now;
        // A batch larger than a second's budget goes out when the bucket is full.
        if self.tokens >= n as f64 || self.tokens >= self.rate {
            self.tokens -= n as f64;
            true
        } else {
            false
        }
    }
}

/// What the uplink reads from the rest of the daemon and reports to it.
pub struct Context {
    pub sync: Arc<SyncStatus>,
    /// The cloud's upload window for this robot, as last received.
    pub upload_window: watch::Sender<Option<UploadWindow>>,
    /// For the mode in the `online` status message.
    pub pipeline: Arc<PipelineStatus>,
    /// The model running and its rollout; a change is published at once.
    pub model: watch::Receiver<ModelReport>,
    /// The cloud's model assignment for this robot, as last received.
    pub assignment: watch::Sender<Option<ModelAssignment>>,
    /// The robot's side of tasks; `None`: this uplink takes no orders (a
    /// sender of logs only, as in the ingest benchmark).
    pub tasks: Option<TaskLink>,
}

/// What the task executor reads and tells.
pub struct TaskLink {
    /// The page's state (for the task `state` messages) and current task.
    pub view: Arc<crate::status::View>,
    /// Where task starts and ends go, to cut episodes.
    pub recorder: std::sync::mpsc::Sender<crate::record::Command>,
}

/// The batches between the outbox and the broker's acknowledgement.
struct Window {
    catalog: Catalog,
    robot: String,
    bucket: Bucket,
    /// Publishes in the order the client will assign them packet ids; `None`
    /// for status messages.
    unassigned: VecDeque<Option<u64>>,
    inflight: HashMap<u16, u64>,
    sent: HashSet<u64>,
    /// Acknowledged, not yet removed from the outbox (still in `sent`, so
    /// not sent again meanwhile).
    acked: Vec<u64>,
}

impl Window {
    /// Hands the client the next batches, up to `WINDOW` unacknowledged and
    /// within the byte budget.
    fn fill(&mut self, client: &AsyncClient) {
        if self.sent.len() >= WINDOW {
            return;
        }
        let Ok(batches) = self.catalog.outbox_next(&self.sent, WINDOW - self.sent.len()) else { return };
        for (seq, kind, payload) in batches {
            if !self.bucket.take(payload.len()) {
                break;
            }
            let leaf = match kind {
                0 => BatchKind::Incidents,
                1 => BatchKind::Health,
                _ => BatchKind::Logs,
            }
            .topic_leaf();
            if client.try_publish(wire::topic(&self.robot, leaf), QoS::AtLeastOnce, false, payload).is_err() {
                break;
            }
            self.unassigned.push_back(Some(seq));
            self.sent.insert(seq);
        }
    }

    fn acknowledged(&mut self, pkid: u16) {
        if let Some(seq) = self.inflight.remove(&pkid) {
            self.acked.push(seq);
        }
    }

    /// Removes the acknowledged batches from the outbox. Losing this to a
    /// crash only sends them again, which the cloud recognises as duplicates.
    fn flush_acks(&mut self) {
        if self.acked.is_empty() {
            return;
        }
        if let Err(e) = self.catalog.outbox_ack(&self.acked) {
            tracing::error!(batches = self.acked.len(), error = %e, "could not remove acknowledged batches; they will be sent again");
        }
        for seq in self.acked.drain(..) {
            self.sent.remove(&seq);
        }
    }

    fn reset(&mut self) {
        self.flush_acks();
        self.unassigned.clear();
        self.inflight.clear();
        self.sent.clear();
    }
}

/// The retained `online` status: mode, model and its rollout. Whether it was queued.
fn publish_status(client: &AsyncClient, robot: &str, cx: &Context) -> bool {
    let model = cx.model.borrow().clone();
    let status = serde_json::json!({
        "state": "online",
        "robot_id": robot,
        "mode": cx.pipeline.mode().as_str(),
        "model_version": model.version,
        "model": model,
        "version": env!("CARGO_PKG_VERSION"),
        "unix_ns": gantry_hal::clock::unix_ns(),
    });
    client.try_publish(wire::topic(robot, wire::STATUS), QoS::AtLeastOnce, true, status.to_string()).is_ok()
}

/// Folds one broker round trip into the smoothed figure (weight 1/8, as TCP's SRTT).
fn note_rtt(rtt_us: &AtomicU64, rtt: Duration) {
    let sample = rtt.as_micros().min(u128::from(u32::MAX)) as u64;
    let _ = rtt_us.fetch_update(Relaxed, Relaxed, |old| {
        Some(if old == 0 { sample.max(1) } else { (old * 7 + sample).div_ceil(8) })
    });
}

/// The dashboard's figures for the next state message.
fn telemetry(cx: &Context, view: &crate::status::View, site: &str) -> gantry_config::task::Telemetry {
    let p = &cx.pipeline;
    let ms = |ns: u64| (ns > 0).then(|| ns as f64 / 1e6);
    let (free, total) = {
        let h = view.health.lock().unwrap_or_else(|e| e.into_inner());
        (h.system.disk_free_bytes, h.system.disk_total_bytes)
    };
    let rtt = cx.sync.rtt_us.load(Relaxed);
    gantry_config::task::Telemetry {
        model_version: cx.model.borrow().version.clone(),
        site: site.to_string(),
        latency_mean_ms: ms(p.latency_mean_ns.load(Relaxed)),
        latency_p95_ms: ms(p.latency_p95_ns.load(Relaxed)),
        net_rtt_ms: (rtt > 0).then(|| rtt as f64 / 1e3),
        disk_free_pct: (total > 0).then(|| 100.0 * free as f64 / total as f64),
    }
}

/// The task `state` message; whether it was queued.
fn publish_state(
    client: &AsyncClient,
    robot: &str,
    executor: &mut Executor,
    pipeline: &PipelineStatus,
    health: &str,
) -> bool {
    let state = executor.state(pipeline.mode(), health, gantry_hal::clock::unix_ns());
    let payload = serde_json::to_vec(&state).unwrap_or_default();
    client.try_publish(wire::topic(robot, task::STATE), QoS::AtLeastOnce, false, payload).is_ok()
}

fn tasks_to_recorder(executor: &mut Executor, link: &TaskLink) {
    for event in executor.take_events() {
        let _ = link.recorder.send(crate::record::Command::Task(event));
    }
}

/// Runs until `stopped`; then says `offline` and disconnects.
pub async fn run(config: EdgeConfig, mut cx: Context, mut stopped: watch::Receiver<bool>) {
    let robot = config.robot.id.clone();
    let creds = match Credentials::load(&config.uplink.credentials_path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "uplink disabled");
            return;
        }
    };
    let routes: Vec<String> =
        std::iter::once(&config.uplink.broker_url).chain(&config.uplink.broker_urls).cloned().collect();
    let options = match routes.iter().map(|url| mqtt_options(&robot, url, &creds)).collect::<anyhow::Result<Vec<_>>>() {
        Ok(o) => o,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "uplink disabled");
            return;
        }
    };
    let _ = cx.sync.routes.set(routes.clone());
    let catalog = match Catalog::open(&Path::new(&config.robot.data_dir).join("catalog.sqlite")) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "uplink disabled: cannot open the catalog");
            return;
        }
    };
    let mut route = Route::new(options, Duration::from_secs(config.uplink.failback_probe_s));
    let mut conn = Connection::open(route.options());
    let sync = cx.sync.clone();
    let mut window = Window {
        catalog,
        robot: robot.clone(),
        bucket: Bucket { rate: config.uplink.catchup_rate_kbps as f64 * 1000.0, tokens: 0.0, at: Instant::now() },
        unassigned: VecDeque::new(),
        inflight: HashMap::new(),
        sent: HashSet::new(),
        acked: Vec::new(),
    };
    let mut connected = false;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut last_logged_error: Option<Instant> = None;
    let (started, mut ever_connected) = (Instant::now(), false);
    let mut model_gone = false;
    let mut executor = Executor::open(&config);
    // Results name the model that ran them: kept current as models change.
    executor.telemetry.model_version = cx.model.borrow().version.clone();
    let mut last_contact = gantry_hal::clock::monotonic_ns();
    let mut last_state = Instant::now();
    // When each packet id went out, for the broker round trip.
    let mut sent_at: HashMap<u16, Instant> = HashMap::new();
    loop {
        tokio::select! {
            _ = stopped.wait_for(|s| *s) => break,
            changed = cx.model.changed(), if !model_gone => {
                model_gone = changed.is_err();
                executor.telemetry.model_version = cx.model.borrow().version.clone();
                if !model_gone && connected && publish_status(&conn.client, &robot, &cx) {
                    window.unassigned.push_back(None);
                }
            }
            _ = tick.tick() => {
                if connected {
                    route.maybe_probe();
                }
                if let Ok((n, _)) = window.catalog.outbox_len() {
                    sync.backlog.store(n, Relaxed);
                }
                if let Some(link) = &cx.tasks {
                    let now = gantry_hal::clock::monotonic_ns();
                    let fault = cx.pipeline.estop().fault_latched;
                    executor.sample(&cx.pipeline, fault, now.saturating_sub(last_contact), now, gantry_hal::clock::unix_ns());
                    tasks_to_recorder(&mut executor, link);
                    *link.view.task.lock().unwrap_or_else(|e| e.into_inner()) = executor.current();
                    if connected && (executor.dirty || last_state.elapsed() >= STATE_EVERY) {
                        executor.telemetry = telemetry(&cx, &link.view, &config.robot.site);
                        if publish_state(&conn.client, &robot, &mut executor, &cx.pipeline, link.view.light()) {
                            window.unassigned.push_back(None);
                        }
                        last_state = Instant::now();
                    }
                }
                window.flush_acks();
                if connected {
                    window.fill(&conn.client);
                }
            }
            reachable = route.probed(), if route.probing() => {
                if reachable && connected {
                    tracing::info!(broker = %routes[0], "uplink: the primary route answers again; returning to it");
                    route.fail_back();
                    conn = Connection::open(route.options());
                    connected = false;
                    sync.connected.store(false, Relaxed);
                    window.reset();
                    sent_at.clear();
                }
            }
            event = conn.events.recv() => {
                let Some(event) = event else { break };
                if matches!(event, Ok(Event::Incoming(_))) {
                    // Anything from the broker renews the task's lease.
                    last_contact = gantry_hal::clock::monotonic_ns();
                }
                match event {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                    connected = true;
                    ever_connected = true;
                    route.connected();
                    sync.connected.store(true, Relaxed);
                    sync.route.store(route.current as u64, Relaxed);
                    tracing::info!(broker = %routes[route.current], "uplink connected");
                    if publish_status(&conn.client, &robot, &cx) {
                        window.unassigned.push_back(None);
                    }
                    let task_leaves = if cx.tasks.is_some() { [task::ORDER, task::INSTANT_ACTIONS].as_slice() } else { &[] };
                    for leaf in [wire::UPLOAD_WINDOW, wire::MODEL].iter().chain(task_leaves) {
                        let _ = conn.client.try_subscribe(wire::topic(&robot, leaf), QoS::AtLeastOnce);
                    }
                    executor.dirty = true;
                    window.fill(&conn.client);
                }
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                    sent_at.insert(pkid, Instant::now());
                    if let Some(Some(seq)) = window.unassigned.pop_front() {
                        window.inflight.insert(pkid, seq);
                    }
                }
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    if p.topic == wire::topic(&robot, task::ORDER) {
                        match serde_json::from_slice::<task::Order>(&p.payload) {
                            Ok(order) => executor.on_order(order, gantry_hal::clock::monotonic_ns(), gantry_hal::clock::unix_ns()),
                            Err(e) => tracing::warn!(error = %e, "ignored a malformed order (check cloud sync's version)"),
                        }
                    } else if p.topic == wire::topic(&robot, task::INSTANT_ACTIONS) {
                        match serde_json::from_slice::<task::InstantActions>(&p.payload) {
                            Ok(actions) => executor.on_actions(&actions, gantry_hal::clock::unix_ns()),
                            Err(e) => tracing::warn!(error = %e, "ignored malformed instant actions (check cloud sync's version)"),
                        }
                    } else if p.topic == wire::topic(&robot, wire::MODEL) {
                        match serde_json::from_slice::<ModelAssignment>(&p.payload) {
                            Ok(a) => {
                                tracing::info!(version = %a.version, status = %a.status, "model assigned");
                                cx.assignment.send_replace(Some(a));
                            }
                            Err(e) => tracing::warn!(error = %e, "ignored a malformed model assignment"),
                        }
                    } else if p.topic == wire::topic(&robot, wire::UPLOAD_WINDOW) {
                        match serde_json::from_slice::<UploadWindow>(&p.payload) {
                            Ok(w) => {
                                tracing::info!(start_unix_ns = w.start_unix_ns, end_unix_ns = w.end_unix_ns, "upload window assigned");
                                cx.upload_window.send_replace(Some(w));
                            }
                            Err(e) => tracing::warn!(error = %e, "ignored a malformed upload window"),
                        }
                    }
                }
                Ok(Event::Incoming(Incoming::PubAck(ack))) => {
                    if let Some(at) = sent_at.remove(&ack.pkid) {
                        note_rtt(&sync.rtt_us, at.elapsed());
                    }
                    window.acknowledged(ack.pkid);
                    // Acknowledgements waiting behind this one are removed with
                    // it, up to half the window (the rest of the window keeps the link busy).
                    if conn.events.is_empty() || window.acked.len() >= WINDOW / 2 {
                        window.flush_acks();
                        // Refill at once: during a catch-up the link, not the tick, sets the pace.
                        window.fill(&conn.client);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    if !ever_connected && started.elapsed() < STARTUP_GRACE {
                        // Started beside its broker: it may not listen yet.
                        tracing::debug!(error = %e, "waiting for the broker");
                    } else if connected || last_logged_error.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                        last_logged_error = Some(Instant::now());
                        tracing::warn!(
                            error = %e,
                            broker = %routes[route.current],
                            "uplink offline; batches wait in the outbox (check that the broker runs and uplink.broker_url names it)"
                        );
                    }
                    connected = false;
                    sync.connected.store(false, Relaxed);
                    // The poller dropped the client's resend queue: everything
                    // goes again from the outbox.
                    window.reset();
                    sent_at.clear();
                    if let Some(next) = route.failed() {
                        tracing::warn!(
                            from = %routes[route.current], to = %routes[next],
                            "uplink: route failed; switching (it returns to the primary once that answers)"
                        );
                        route.switch(next);
                        sync.failovers.fetch_add(1, Relaxed);
                        conn = Connection::open(route.options());
                    }
                }
            }
            }
        }
    }
    window.flush_acks();
    if let Some(link) = &cx.tasks {
        executor.interrupt(gantry_hal::clock::unix_ns());
        tasks_to_recorder(&mut executor, link);
        if connected {
            // Not green: the cloud gives a stopping robot nothing new.
            publish_state(&conn.client, &robot, &mut executor, &cx.pipeline, "stopping");
        }
    }
    if connected {
        let _ = conn.client.try_publish(wire::topic(&robot, wire::STATUS), QoS::AtLeastOnce, true, "offline");
        let _ = conn.client.try_disconnect();
        // Let the event loop write both out, briefly.
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            while let Some(Ok(ev)) = conn.events.recv().await {
                if matches!(ev, Event::Outgoing(Outgoing::Disconnect)) {
                    break;
                }
            }
        })
        .await;
    }
    drop(conn);
    sync.connected.store(false, Relaxed);
}

/// One MQTT connection: the client and its event loop's events.
struct Connection {
    client: AsyncClient,
    events: tokio::sync::mpsc::Receiver<Result<Event, rumqttc::ConnectionError>>,
    poller: tokio::task::JoinHandle<()>,
}

impl Connection {
    fn open(options: MqttOptions) -> Self {
        let (client, event_loop) = AsyncClient::new(options, 64);
        let (event_tx, events) = tokio::sync::mpsc::channel(64);
        let poller = tokio::spawn(poll(event_loop, event_tx));
        Self { client, events, poller }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Dropping the event loop closes the socket; the batches it had in
        // flight go again from the outbox on the next connection.
        self.poller.abort();
    }
}

/// Connection attempts that fail on a route before the next route is tried.
const FAILOVER_AFTER: u32 = 2;

/// Which of the uplink's routes to the broker is in use, and when to change.
///
/// A route that fails [`FAILOVER_AFTER`] times in a row gives way to the
/// next (the last to the first). On another route, the primary is probed
/// every `probe_every` with a TCP connect that stays open; when that succeeds the uplink
/// tries the primary again for real (the probe cannot log in: the broker
/// admits one session per robot), and a first failure there sends it back.
struct Route {
    options: Vec<MqttOptions>,
    current: usize,
    failures: u32,
    /// Came back to the primary on a probe, not yet connected there: where from.
    trial_from: Option<usize>,
    probe_every: Duration,
    last_probe: Instant,
    probe: Option<tokio::task::JoinHandle<bool>>,
}

impl Route {
    fn new(options: Vec<MqttOptions>, probe_every: Duration) -> Self {
        Self {
            options,
            current: 0,
            failures: 0,
            trial_from: None,
            probe_every,
            last_probe: Instant::now(),
            probe: None,
        }
    }

    fn options(&self) -> MqttOptions {
        self.options[self.current].clone()
    }

    fn connected(&mut self) {
        self.failures = 0;
        self.trial_from = None;
    }

    /// A connection attempt or session failed: the route to switch to, if any.
    fn failed(&mut self) -> Option<usize> {
        self.failures += 1;
        if let Some(from) = self.trial_from.take() {
            return Some(from);
        }
        (self.options.len() > 1 && self.failures >= FAILOVER_AFTER).then(|| (self.current + 1) % self.options.len())
    }

    fn switch(&mut self, to: usize) {
        self.current = to;
        self.failures = 0;
        self.last_probe = Instant::now();
        if let Some(p) = self.probe.take() {
            p.abort();
        }
    }

    /// Starts a probe of the primary when one is due.
    fn maybe_probe(&mut self) {
        if self.current == 0 || self.probe.is_some() || self.last_probe.elapsed() < self.probe_every {
            return;
        }
        self.last_probe = Instant::now();
        let (host, port) = self.options[0].broker_address();
        self.probe = Some(tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let connect = tokio::net::TcpStream::connect((host.as_str(), port));
            let Ok(Ok(mut stream)) = tokio::time::timeout(Duration::from_secs(2), connect).await else { return false };
            // A broker waits for the client's first packet; a link that
            // only terminates TCP (a proxy or modem with nothing behind it)
            // closes at once.
            tokio::time::timeout(Duration::from_millis(300), stream.read(&mut [0u8; 1])).await.is_err()
        }));
    }

    fn probing(&self) -> bool {
        self.probe.is_some()
    }

    /// The probe's answer: whether the primary took a TCP connection.
    async fn probed(&mut self) -> bool {
        let Some(p) = self.probe.as_mut() else { return false };
        let reachable = p.await.unwrap_or(false);
        self.probe = None;
        reachable
    }

    fn fail_back(&mut self) {
        let from = self.current;
        self.switch(0);
        self.trial_from = Some(from);
    }
}

/// Drives the MQTT event loop in a task of its own and hands its events over:
/// a poll cancelled by another branch of a `select!` while it connects drops
/// the connection, and the uplink's 50 ms tick would do that. After an error it
/// drops the client's resend queue (every packet id must map to a batch the
/// outbox knows, so unacknowledged batches go again from there) and waits
/// before the next attempt, 0.2 s doubling to 5 s, reset by a CONNACK.
async fn poll(mut events: rumqttc::EventLoop, tx: tokio::sync::mpsc::Sender<Result<Event, rumqttc::ConnectionError>>) {
    let mut retry = Duration::from_millis(200);
    loop {
        let event = events.poll().await;
        let failed = event.is_err();
        if matches!(event, Ok(Event::Incoming(Incoming::ConnAck(_)))) {
            retry = Duration::from_millis(200);
        }
        if failed {
            events.pending.clear();
        }
        if tx.send(event).await.is_err() {
            return;
        }
        if failed {
            tokio::time::sleep(retry).await;
            retry = (retry * 2).min(Duration::from_secs(5));
        }
    }
}
