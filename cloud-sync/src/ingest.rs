//! Ingestion: every robot's log batches, from the broker into the object store
//! and the catalog, each (robot, seq) exactly once.
//!
//! QoS 1 with manual acknowledgements: a batch is acknowledged only after its
//! bytes are stored and its catalog row committed, so the broker redelivers
//! anything a crash interrupted; a redelivered or resent batch is recognised
//! by (robot, seq) and acknowledged without being stored again. Malformed,
//! oversized or mismatched payloads are rejected, counted, logged with the
//! robot id, and acknowledged so they are not redelivered forever.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gantry_config::wire::{self, BatchKind};
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, Publish, QoS};
use tokio::sync::watch;

use crate::store::{object_key, run_object_key, CloudCatalog, Stored, StoredSegment};

#[derive(Debug, Default)]
pub struct IngestStats {
    pub received: AtomicU64,
    pub stored: AtomicU64,
    pub stored_bytes: AtomicU64,
    pub duplicates: AtomicU64,
    /// Batches reusing a stored (robot, seq) with another body: kept aside.
    pub conflicts: AtomicU64,
    pub rejected_topic: AtomicU64,
    pub rejected_oversize: AtomicU64,
    pub rejected_malformed: AtomicU64,
    pub rejected_mismatch: AtomicU64,
    pub store_errors: AtomicU64,
    /// Catalog commits (each a run of batches).
    pub runs: AtomicU64,
    /// Receipt to commit of each batch stored (its acknowledgement follows at once).
    pub commit_lag: LagHistogram,
    pub connected: std::sync::atomic::AtomicBool,
    /// The broker confirmed the subscriptions: batches published now reach us.
    pub subscribed: std::sync::atomic::AtomicBool,
    /// Notified when `subscribed` turns true.
    pub ready: tokio::sync::Notify,
}

/// Bucket bounds of [`LagHistogram`], in seconds (Prometheus' `le`).
pub const LAG_BUCKETS_S: [f64; 14] = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0];

/// A latency histogram of fixed buckets, lock-free to record.
#[derive(Debug, Default)]
pub struct LagHistogram {
    /// One count per bucket of [`LAG_BUCKETS_S`], then one for longer.
    counts: [AtomicU64; LAG_BUCKETS_S.len() + 1],
    sum_us: AtomicU64,
}

impl LagHistogram {
    pub fn record(&self, seconds: f64) {
        let i = LAG_BUCKETS_S.iter().position(|b| seconds <= *b).unwrap_or(LAG_BUCKETS_S.len());
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add((seconds.max(0.0) * 1e6) as u64, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// The bound of the bucket holding quantile `q` (infinite past the last).
    pub fn quantile_bound(&self, q: f64) -> f64 {
        let want = (q * self.count() as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c.load(Relaxed);
            if seen >= want {
                return LAG_BUCKETS_S.get(i).copied().unwrap_or(f64::INFINITY);
            }
        }
        f64::INFINITY
    }

    /// Prometheus text of the histogram `name`.
    pub fn prometheus(&self, name: &str, help: &str) -> String {
        let mut out = format!("# HELP {name} {help}\n# TYPE {name} histogram\n");
        let mut cumulative = 0;
        for (bound, c) in LAG_BUCKETS_S.iter().zip(&self.counts) {
            cumulative += c.load(Relaxed);
            out.push_str(&format!("{name}_bucket{{le=\"{bound}\"}} {cumulative}\n"));
        }
        let count = self.count();
        out.push_str(&format!("{name}_bucket{{le=\"+Inf\"}} {count}\n"));
        out.push_str(&format!("{name}_sum {}\n", self.sum_us.load(Relaxed) as f64 / 1e6));
        out.push_str(&format!("{name}_count {count}\n"));
        out
    }
}

impl IngestStats {
    pub fn rejected(&self) -> u64 {
        self.rejected_topic.load(Relaxed)
            + self.rejected_oversize.load(Relaxed)
            + self.rejected_malformed.load(Relaxed)
            + self.rejected_mismatch.load(Relaxed)
    }
}

pub struct Ingest {
    pub catalog: Arc<dyn CloudCatalog>,
    pub store: Arc<dyn ObjectStore>,
    pub prefix: ObjectPath,
    pub max_payload: usize,
    pub quality: crate::quality::Limits,
    pub stats: Arc<IngestStats>,
    /// Told when a robot comes online, to send it its assignments again.
    pub assignments: Option<Arc<crate::assign::Assignments>>,
}

/// What checking a message leaves for the run: the row of a batch to store
/// with its body (for the run's object; `None` once kept aside on its own),
/// or nothing (a status, a duplicate, a rejection).
type Staged = Option<(StoredSegment, Option<Bytes>)>;

/// Why a payload was refused.
#[derive(Debug)]
enum Reject {
    Topic,
    Oversize(usize),
    Malformed(String),
    Mismatch(String),
}

impl std::fmt::Display for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reject::Topic => write!(f, "not a Gantry topic"),
            Reject::Oversize(n) => write!(f, "{n} bytes, over ingest.max_payload_kb"),
            Reject::Malformed(why) => write!(f, "malformed: {why}"),
            Reject::Mismatch(why) => write!(f, "mismatch: {why}"),
        }
    }
}

impl Ingest {
    /// Handles one message; `Err` only for storage failures (the batch is then
    /// not acknowledged, so the broker delivers it again).
    pub async fn handle(&self, topic: &str, payload: &[u8]) -> anyhow::Result<()> {
        self.handle_run(&[(topic, payload)]).await.pop().unwrap_or(Ok(()))
    }

    /// Handles a run of messages in arrival order: each is checked and parsed
    /// once, the run's bodies are stored as one object (one write, however
    /// many batches: the object store's cost is per object), then the catalog
    /// rows of the run are committed in one transaction. One result per
    /// message, `Err` for storage failures (those are not acknowledged).
    pub async fn handle_run(&self, msgs: &[(&str, &[u8])]) -> Vec<anyhow::Result<()>> {
        self.stats.received.fetch_add(msgs.len() as u64, Relaxed);
        // A second body for a (robot, seq) the run already holds goes aside,
        // so the two never write the same object.
        let mut firsts: HashMap<(&str, u64), String> = HashMap::new();
        let aside: Vec<bool> = msgs
            .iter()
            .map(|(topic, payload)| {
                let robot = wire::parse_topic(topic).map_or("", |(r, _)| r);
                match wire::decode_header(payload) {
                    Ok((h, _)) => firsts.entry((robot, h.seq)).or_insert(h.body_sha256.clone()) != &h.body_sha256,
                    Err(_) => false,
                }
            })
            .collect();
        let staged = futures::future::join_all(
            msgs.iter().zip(&aside).map(|((topic, payload), aside)| self.stage(topic, payload, *aside)),
        )
        .await;
        // Rows move out to the commit; each message keeps whether it gave one.
        let (mut rows, mut bodies) = (Vec::new(), Vec::new());
        let mut gave_row: Vec<anyhow::Result<bool>> = staged
            .into_iter()
            .map(|s| {
                s.map(|staged| {
                    staged
                        .map(|(row, body)| {
                            bodies.push(body);
                            rows.push(row);
                        })
                        .is_some()
                })
            })
            .collect();
        if let Err(e) = self.store_run(&mut rows, &bodies).await {
            let why = format!("{e:#}");
            self.stats.store_errors.fetch_add(bodies.iter().flatten().count() as u64, Relaxed);
            // Only the batches of the run's object failed; rows kept aside stand.
            let mut failed = bodies.iter().map(Option::is_some);
            for g in &mut gave_row {
                if matches!(g, Ok(true)) && failed.next() == Some(true) {
                    *g = Err(anyhow::anyhow!("storing the run's bodies: {why}"));
                }
            }
            rows = rows.into_iter().zip(&bodies).filter(|(_, body)| body.is_none()).map(|(row, _)| row).collect();
        }
        let fates = self.catalog.insert_segments(&rows);
        let committed = crate::unix_now_ns();
        let fates = match fates {
            Ok(f) => f,
            Err(e) => {
                let why = format!("{e:#}");
                self.stats.store_errors.fetch_add(rows.len() as u64, Relaxed);
                return gave_row
                    .into_iter()
                    .map(|g| match g {
                        Ok(true) => Err(anyhow::anyhow!("committing the catalog: {why}")),
                        other => other.map(|_| ()),
                    })
                    .collect();
            }
        };
        let mut committed_rows = rows.into_iter().zip(fates);
        gave_row
            .into_iter()
            .map(|g| {
                if !g? {
                    return Ok(());
                }
                let Some((row, fate)) = committed_rows.next() else { return Ok(()) };
                match fate {
                    Stored::New => {
                        let lag_ns = committed.saturating_sub(row.received_unix_ns);
                        self.stats.commit_lag.record(lag_ns as f64 / 1e9);
                        self.stats.stored.fetch_add(1, Relaxed);
                        self.stats.stored_bytes.fetch_add(row.bytes, Relaxed);
                    }
                    Stored::Duplicate => {
                        self.stats.duplicates.fetch_add(1, Relaxed);
                    }
                    Stored::Conflict { stored_sha256 } => {
                        self.stats.conflicts.fetch_add(1, Relaxed);
                        tracing::warn!(
                            robot = %row.robot_id, seq = row.seq, stored_sha256 = %stored_sha256,
                            sha256 = %row.sha256, kept = %row.object_key,
                            "a batch reuses a stored (robot, seq) with another body: kept aside, not stored"
                        );
                    }
                }
                Ok(())
            })
            .collect()
    }

    /// Writes the bodies waiting for the run's object as one object, each
    /// row pointing at its range. Rows whose body was kept aside are left.
    async fn store_run(&self, rows: &mut [StoredSegment], bodies: &[Option<Bytes>]) -> anyhow::Result<()> {
        let Some(first) = rows.iter().zip(bodies).find(|(_, b)| b.is_some()).map(|(r, _)| r) else { return Ok(()) };
        let id = format!("run-{}-{}-{:012}", first.received_unix_ns, first.robot_id, first.seq);
        let key = run_object_key(&self.prefix, first.received_unix_ns, &id).to_string();
        let total = bodies.iter().flatten().map(Bytes::len).sum();
        let mut object = Vec::with_capacity(total);
        for (row, body) in rows.iter_mut().zip(bodies) {
            if let Some(body) = body {
                row.object_key.clone_from(&key);
                row.object_offset = object.len() as u64;
                object.extend_from_slice(body);
            }
        }
        self.store.put(&ObjectPath::from(key), Bytes::from(object).into()).await?;
        Ok(())
    }

    /// Checks one message; its body is left to the run's object (or kept
    /// aside now, for a conflict) and its catalog row to the run's commit.
    async fn stage(&self, topic: &str, payload: &[u8], aside: bool) -> anyhow::Result<Staged> {
        let robot = wire::parse_topic(topic).map(|(r, _)| r.to_string());
        match self.accept(topic, payload, aside).await {
            Ok(staged) => Ok(staged),
            Err(Ok(reject)) => {
                let counter = match &reject {
                    Reject::Topic => &self.stats.rejected_topic,
                    Reject::Oversize(_) => &self.stats.rejected_oversize,
                    Reject::Malformed(_) => &self.stats.rejected_malformed,
                    Reject::Mismatch(_) => &self.stats.rejected_mismatch,
                };
                counter.fetch_add(1, Relaxed);
                tracing::warn!(robot = robot.as_deref().unwrap_or("?"), %topic, reason = %reject, bytes = payload.len(), "rejected a payload");
                Ok(None)
            }
            Err(Err(e)) => {
                self.stats.store_errors.fetch_add(1, Relaxed);
                Err(e)
            }
        }
    }

    async fn accept(&self, topic: &str, payload: &[u8], aside: bool) -> Result<Staged, Result<Reject, anyhow::Error>> {
        let (robot, leaf) = wire::parse_topic(topic).ok_or(Ok(Reject::Topic))?;
        let now = crate::unix_now_ns();
        if leaf == wire::STATUS {
            return self.status(robot, payload).map(|()| None).map_err(Err);
        }
        let kind = BatchKind::from_leaf(leaf).ok_or(Ok(Reject::Topic))?;
        if payload.len() > self.max_payload {
            return Err(Ok(Reject::Oversize(payload.len())));
        }
        let (header, body) = wire::decode(payload).map_err(|e| Ok(Reject::Malformed(e.to_string())))?;
        if header.robot_id != robot || header.kind != kind {
            return Err(Ok(Reject::Mismatch(format!(
                "header says {} {:?}, topic says {robot} {kind:?}",
                header.robot_id, header.kind
            ))));
        }
        let stored = self.catalog.segment_sha256(robot, header.seq).map_err(Err)?;
        if stored.as_deref() == Some(header.body_sha256.as_str()) {
            // Redelivered or resent: only the robot's last-seen time moves.
            self.catalog.touch_robot(robot, now).map_err(Err)?;
            self.stats.duplicates.fetch_add(1, Relaxed);
            return Ok(None);
        }
        // One pass over the body: counts, damage and quality together.
        let parsed = crate::quality::parse(body).map_err(|e| Ok(Reject::Malformed(format!("body: {e:#}"))))?;
        if parsed.damaged_chunks > 0 {
            return Err(Ok(Reject::Malformed(format!("body: {} damaged chunks", parsed.damaged_chunks))));
        }
        if parsed.messages != header.messages {
            return Err(Ok(Reject::Malformed(format!(
                "{} messages, header says {}",
                parsed.messages, header.messages
            ))));
        }
        let flags = crate::quality::batch_flags(&parsed, &self.quality);
        let id = format!("{robot}-{:012}", header.seq);
        let (key, for_run) = if stored.is_some() || aside {
            let aside_id = format!("{id}-{}", &header.body_sha256[..16.min(header.body_sha256.len())]);
            let key = object_key(&self.prefix, "conflicts", robot, header.start_unix_ns, &aside_id);
            self.store.put(&key, Bytes::copy_from_slice(body).into()).await.map_err(|e| Err(e.into()))?;
            (key.to_string(), None)
        } else {
            if !flags.is_empty() {
                tracing::info!(robot, seq = header.seq, ?flags, "stored a batch with quality flags");
            }
            if kind == BatchKind::Health {
                self.health(robot, &parsed.health).map_err(Err)?;
            }
            (String::new(), Some(Bytes::copy_from_slice(body)))
        };
        Ok(Some((
            StoredSegment {
                cursor: 0,
                id,
                robot_id: robot.to_string(),
                seq: header.seq,
                kind: kind.as_str().to_string(),
                edge_segment_id: header.segment_id,
                object_key: key,
                object_offset: 0,
                bytes: body.len() as u64,
                sha256: header.body_sha256,
                messages: parsed.messages,
                start_unix_ns: header.start_unix_ns,
                end_unix_ns: header.end_unix_ns,
                received_unix_ns: now,
                flags,
            },
            for_run,
        )))
    }

    fn status(&self, robot: &str, payload: &[u8]) -> anyhow::Result<()> {
        if payload == b"offline" {
            return self.catalog.set_robot_state(robot, "offline", None);
        }
        let v: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
        let state = v["state"].as_str().unwrap_or("online");
        let now = crate::unix_now_ns();
        if state == "online" {
            // A robot that kept its broker session does not get retained
            // messages again when it subscribes (rumqttd): whoever publishes
            // assignments (the leader, among replicas) sends them anew.
            self.catalog.robot_online(robot, now)?;
            if let Some(a) = &self.assignments {
                a.poke();
            }
        }
        self.catalog.touch_robot(robot, now)?;
        if v["model"].is_object() {
            self.catalog.set_robot_model_report(robot, &v["model"])?;
        }
        self.catalog.set_robot_state(robot, state, v["model_version"].as_str())
    }

    /// The newest health snapshot in a health batch updates the robot's row.
    fn health(&self, robot: &str, snapshots: &[serde_json::Value]) -> anyhow::Result<()> {
        if let Some(h) = snapshots.last() {
            self.catalog.set_robot_health(
                robot,
                h["mode"].as_str().unwrap_or("unknown"),
                h["sync_backlog"].as_u64().unwrap_or(0),
            )?;
        }
        Ok(())
    }
}

/// Batches committed together at most: the broker's in-flight window for
/// the subscriber (Mosquitto's default is 20) usually bounds a run first.
const MAX_RUN: usize = 256;

/// Subscribes and ingests until `stopped`. `share_group`: subscribe through
/// `$share/GROUP/…` so several instances split the load on an external broker.
/// `own`: this instance's session (false for one taken over from another
/// replica, which leaves the connected and subscribed flags alone).
///
/// Group commit: this task polls the connection and hands each PUBLISH to a
/// committer task, which takes every PUBLISH waiting (a run), stores their
/// bodies, commits their catalog rows in one transaction and only then
/// acknowledges them, in arrival order. The committer never waits on this
/// task (acks go through the client's queue, which the polling drains), and
/// this task never waits on the committer (an unbounded hand-off whose depth
/// the broker's in-flight window bounds).
pub async fn run(
    ingest: Arc<Ingest>,
    mut options: MqttOptions,
    share_group: Option<String>,
    own: bool,
    mut stopped: watch::Receiver<bool>,
) {
    options.set_manual_acks(true);
    options.set_clean_session(false);
    options.set_keep_alive(Duration::from_secs(10));
    options.set_max_packet_size(ingest.max_payload + 64 * 1024, 64 * 1024);
    let (client, mut events) = AsyncClient::new(options, MAX_RUN * 2);
    let filters: Vec<String> = [wire::LOGS, wire::INCIDENTS, wire::HEALTH, wire::STATUS]
        .iter()
        .map(|leaf| match &share_group {
            Some(g) => format!("$share/{g}/gantry/+/{leaf}"),
            None => format!("gantry/+/{leaf}"),
        })
        .collect();
    let mut last_error: Option<Instant> = None;
    let started = Instant::now();
    let mut ever_connected = false;
    // Packet ids die with a connection: a run from an older connection is
    // not acknowledged (the broker delivers it again, and dedup answers).
    let connection = Arc::new(AtomicU64::new(0));
    let (work, inbox) = tokio::sync::mpsc::unbounded_channel::<(u64, Publish)>();
    let committer = tokio::spawn(commit_runs(ingest.clone(), client.clone(), inbox, connection.clone()));
    loop {
        let event = tokio::select! {
            e = events.poll() => e,
            _ = stopped.wait_for(|s| *s) => break,
        };
        match event {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                ever_connected = true;
                if own {
                    ingest.stats.connected.store(true, Relaxed);
                }
                for f in &filters {
                    let _ = client.try_subscribe(f.clone(), QoS::AtLeastOnce);
                }
                tracing::info!(?filters, "ingestion subscribed");
            }
            Ok(Event::Incoming(Incoming::SubAck(_))) if own => {
                ingest.stats.subscribed.store(true, Relaxed);
                ingest.stats.ready.notify_waiters();
            }
            Ok(Event::Incoming(Incoming::Publish(p))) => {
                if work.send((connection.load(Relaxed), p)).is_err() {
                    break;
                }
            }
            Ok(_) => {}
            Err(e) => {
                connection.fetch_add(1, Relaxed);
                if own {
                    ingest.stats.connected.store(false, Relaxed);
                    ingest.stats.subscribed.store(false, Relaxed);
                }
                // The embedded broker may still be binding its port at start-up.
                if !ever_connected && started.elapsed() < Duration::from_secs(5) {
                    tracing::debug!(error = %e, "ingestion: broker not reachable yet; retrying");
                } else if last_error.is_none_or(|t| t.elapsed() > Duration::from_secs(30)) {
                    last_error = Some(Instant::now());
                    tracing::warn!(error = %e, "ingestion lost the broker; reconnecting");
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                    _ = stopped.wait_for(|s| *s) => break,
                }
            }
        }
    }
    drop(work);
    committer.abort();
    let _ = client.try_disconnect();
}

/// The committer: runs of PUBLISHes stored, committed, then acknowledged.
async fn commit_runs(
    ingest: Arc<Ingest>,
    client: AsyncClient,
    mut inbox: tokio::sync::mpsc::UnboundedReceiver<(u64, Publish)>,
    connection: Arc<AtomicU64>,
) {
    let mut run: Vec<(u64, Publish)> = Vec::with_capacity(MAX_RUN);
    while inbox.recv_many(&mut run, MAX_RUN).await > 0 {
        let msgs: Vec<(&str, &[u8])> = run.iter().map(|(_, p)| (p.topic.as_str(), &p.payload[..])).collect();
        let results = ingest.handle_run(&msgs).await;
        ingest.stats.runs.fetch_add(1, Relaxed);
        let current = connection.load(Relaxed);
        for ((conn, p), result) in run.drain(..).zip(results) {
            match result {
                Ok(()) if conn == current => {
                    if client.ack(&p).await.is_err() {
                        return;
                    }
                }
                Ok(()) => {}
                Err(e) => tracing::error!(topic = %p.topic, error = %format!("{e:#}"), "could not store a batch"),
            }
        }
    }
}
