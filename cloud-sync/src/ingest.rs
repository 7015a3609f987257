//! Ingestion: every robot's log batches, from the broker into the object store
//! and the catalog, each (robot, seq) exactly once.
//!
//! QoS 1 with manual acknowledgements: a batch is acknowledged only after its
//! bytes are stored and its catalog row committed, so the broker redelivers
//! anything a crash interrupted; a redelivered or resent batch is recognised
//! by (robot, seq) and acknowledged without being stored again. Malformed,
//! oversized or mismatched payloads are rejected, counted, logged with the
//! robot id, and acknowledged so they are not redelivered forever.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gantry_config::wire::{self, BatchKind};
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, Publish, QoS};
use tokio::sync::watch;

use crate::store::{object_key, CloudCatalog, StoredSegment};

#[derive(Debug, Default)]
pub struct IngestStats {
    pub received: AtomicU64,
    pub stored: AtomicU64,
    pub stored_bytes: AtomicU64,
    pub duplicates: AtomicU64,
    pub rejected_topic: AtomicU64,
    pub rejected_oversize: AtomicU64,
    pub rejected_malformed: AtomicU64,
    pub rejected_mismatch: AtomicU64,
    pub store_errors: AtomicU64,
    pub connected: std::sync::atomic::AtomicBool,
    /// The broker confirmed the subscriptions: batches published now reach us.
    pub subscribed: std::sync::atomic::AtomicBool,
    /// Notified when `subscribed` turns true.
    pub ready: tokio::sync::Notify,
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
}

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
        self.stats.received.fetch_add(1, Relaxed);
        let robot = wire::parse_topic(topic).map(|(r, _)| r.to_string());
        match self.accept(topic, payload).await {
            Ok(()) => Ok(()),
            Err(Ok(reject)) => {
                let counter = match &reject {
                    Reject::Topic => &self.stats.rejected_topic,
                    Reject::Oversize(_) => &self.stats.rejected_oversize,
                    Reject::Malformed(_) => &self.stats.rejected_malformed,
                    Reject::Mismatch(_) => &self.stats.rejected_mismatch,
                };
                counter.fetch_add(1, Relaxed);
                tracing::warn!(robot = robot.as_deref().unwrap_or("?"), %topic, reason = %reject, bytes = payload.len(), "rejected a payload");
                Ok(())
            }
            Err(Err(e)) => {
                self.stats.store_errors.fetch_add(1, Relaxed);
                Err(e)
            }
        }
    }

    async fn accept(&self, topic: &str, payload: &[u8]) -> Result<(), Result<Reject, anyhow::Error>> {
        let (robot, leaf) = wire::parse_topic(topic).ok_or(Ok(Reject::Topic))?;
        let now = crate::unix_now_ns();
        if leaf == wire::STATUS {
            return self.status(robot, payload).map_err(Err);
        }
        let kind = BatchKind::from_leaf(leaf).ok_or(Ok(Reject::Topic))?;
        if payload.len() > self.max_payload {
            return Err(Ok(Reject::Oversize(payload.len())));
        }
        let (header, _) = wire::decode_header(payload).map_err(|e| Ok(Reject::Malformed(e.to_string())))?;
        if header.robot_id != robot || header.kind != kind {
            return Err(Ok(Reject::Mismatch(format!(
                "header says {} {:?}, topic says {robot} {kind:?}",
                header.robot_id, header.kind
            ))));
        }
        self.catalog.touch_robot(robot, now).map_err(Err)?;
        if self.catalog.has_segment(robot, header.seq).map_err(Err)? {
            self.stats.duplicates.fetch_add(1, Relaxed);
            return Ok(());
        }
        let (header, body) = wire::decode(payload).map_err(|e| Ok(Reject::Malformed(e.to_string())))?;
        let messages = count_messages(body).map_err(|e| Ok(Reject::Malformed(format!("body: {e}"))))?;
        if messages != header.messages {
            return Err(Ok(Reject::Malformed(format!("{messages} messages, header says {}", header.messages))));
        }
        let parsed = crate::quality::parse(body).map_err(|e| Ok(Reject::Malformed(format!("body: {e:#}"))))?;
        let flags = crate::quality::batch_flags(&parsed, &self.quality);
        if !flags.is_empty() {
            tracing::info!(robot, seq = header.seq, ?flags, "stored a batch with quality flags");
        }
        if kind == BatchKind::Health {
            self.health(robot, &parsed.health).map_err(Err)?;
        }
        let id = format!("{robot}-{:012}", header.seq);
        let key = object_key(&self.prefix, "logs", robot, header.start_unix_ns, &id);
        self.store.put(&key, Bytes::copy_from_slice(body).into()).await.map_err(|e| Err(e.into()))?;
        let row = StoredSegment {
            cursor: 0,
            id,
            robot_id: robot.to_string(),
            seq: header.seq,
            kind: kind.as_str().to_string(),
            edge_segment_id: header.segment_id,
            object_key: key.to_string(),
            bytes: body.len() as u64,
            sha256: header.body_sha256,
            messages,
            start_unix_ns: header.start_unix_ns,
            end_unix_ns: header.end_unix_ns,
            received_unix_ns: now,
            flags,
        };
        if self.catalog.insert_segment(&row).map_err(Err)? {
            self.stats.stored.fetch_add(1, Relaxed);
            self.stats.stored_bytes.fetch_add(row.bytes, Relaxed);
        } else {
            self.stats.duplicates.fetch_add(1, Relaxed);
        }
        Ok(())
    }

    fn status(&self, robot: &str, payload: &[u8]) -> anyhow::Result<()> {
        if payload == b"offline" {
            return self.catalog.set_robot_state(robot, "offline", None);
        }
        let v: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
        let state = v["state"].as_str().unwrap_or("online");
        self.catalog.touch_robot(robot, crate::unix_now_ns())?;
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

/// Messages in an MCAP body; any damage is an error.
fn count_messages(body: &[u8]) -> anyhow::Result<u64> {
    if let Some(at) = gantry_config::records::unreadable_chunk(body) {
        anyhow::bail!("the chunk at byte {at} does not read back within its declared sizes");
    }
    let mut n = 0;
    for m in mcap::MessageStream::new(body)? {
        m?;
        n += 1;
    }
    Ok(n)
}

/// Subscribes and ingests until `stopped`. `share_group`: subscribe through
/// `$share/GROUP/…` so several instances split the load on an external broker.
pub async fn run(
    ingest: Arc<Ingest>,
    mut options: MqttOptions,
    share_group: Option<String>,
    mut stopped: watch::Receiver<bool>,
) {
    options.set_manual_acks(true);
    options.set_clean_session(false);
    options.set_keep_alive(Duration::from_secs(10));
    options.set_max_packet_size(ingest.max_payload + 64 * 1024, 64 * 1024);
    let (client, mut events) = AsyncClient::new(options, 256);
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
    // Stored batches whose PUBACK has not been handed to the client yet, in
    // arrival order (MQTT wants QoS 1 acks in order). This task also polls the
    // event loop, which takes requests only between network reads: awaiting
    // room in its request queue here would deadlock under load.
    let mut to_ack: VecDeque<Publish> = VecDeque::new();
    loop {
        while let Some(p) = to_ack.front() {
            if client.try_ack(p).is_err() {
                break;
            }
            to_ack.pop_front();
        }
        let event = tokio::select! {
            e = events.poll() => e,
            _ = stopped.wait_for(|s| *s) => break,
        };
        match event {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                ever_connected = true;
                ingest.stats.connected.store(true, Relaxed);
                for f in &filters {
                    let _ = client.try_subscribe(f.clone(), QoS::AtLeastOnce);
                }
                tracing::info!(?filters, "ingestion subscribed");
            }
            Ok(Event::Incoming(Incoming::SubAck(_))) => {
                ingest.stats.subscribed.store(true, Relaxed);
                ingest.stats.ready.notify_waiters();
            }
            Ok(Event::Incoming(Incoming::Publish(p))) => {
                if process(&ingest, &p).await {
                    to_ack.push_back(p);
                }
            }
            Ok(_) => {}
            Err(e) => {
                // Packet ids die with the connection; the broker redelivers what was not acked.
                to_ack.clear();
                ingest.stats.connected.store(false, Relaxed);
                ingest.stats.subscribed.store(false, Relaxed);
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
    let _ = client.try_disconnect();
}

/// Whether to acknowledge `p`: stored, a duplicate or rejected; not when
/// storing failed (the broker delivers it again after a reconnect).
async fn process(ingest: &Ingest, p: &Publish) -> bool {
    match ingest.handle(&p.topic, &p.payload).await {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(topic = %p.topic, error = %format!("{e:#}"), "could not store a batch");
            false
        }
    }
}
