//! Log batches for the uplink: the same messages the segment gets (images
//! excepted), cut into small MCAP files — incidents at once, health per
//! snapshot, actions, frames and episodes every `uplink.batch_period_s` — and
//! queued in the catalog's outbox inside the envelope of
//! [`gantry_config::wire`].

use std::collections::BTreeMap;
use std::io::Cursor;
use std::time::{Duration, Instant};

use gantry_config::wire::{self, BatchHeader, BatchKind};
use mcap::records::MessageHeader;
use mcap::{Compression, WriteOptions, Writer};

use super::messages::{ALL, MESSAGE_ENCODING, SCHEMA_ENCODING};

/// One batch being filled.
struct Open {
    writer: Writer<Cursor<Vec<u8>>>,
    channels: [Option<u16>; ALL.len()],
    sequence: u32,
    messages: u64,
    bytes: u64,
    bounds: (u64, u64),
    opened: Instant,
}

pub struct Batcher {
    kind: BatchKind,
    max_bytes: u64,
    period: Duration,
    open: Option<Open>,
}

/// A finished batch body (an MCAP file) and what the header needs.
pub struct Cut {
    pub kind: BatchKind,
    pub body: Vec<u8>,
    pub messages: u64,
    pub bounds: (u64, u64),
}

impl Batcher {
    pub fn new(kind: BatchKind, max_bytes: u64, period: Duration) -> Self {
        Self { kind, max_bytes, period, open: None }
    }

    pub fn add(&mut self, channel: usize, unix_ns: u64, data: &[u8]) -> anyhow::Result<()> {
        let open = match self.open.as_mut() {
            Some(o) => o,
            None => {
                let writer = WriteOptions::new()
                    .compression(Some(Compression::Zstd))
                    .compression_threads(0)
                    .chunk_size(Some(self.max_bytes.max(1) * 2))
                    .profile("gantry")
                    .library(concat!("gantry-edge ", env!("CARGO_PKG_VERSION")))
                    .create(Cursor::new(Vec::with_capacity(16 * 1024)))?;
                self.open.insert(Open {
                    writer,
                    channels: [None; ALL.len()],
                    sequence: 0,
                    messages: 0,
                    bytes: 0,
                    bounds: (unix_ns, unix_ns),
                    opened: Instant::now(),
                })
            }
        };
        let id = match open.channels[channel] {
            Some(id) => id,
            None => {
                let def = ALL[channel];
                let schema = open.writer.add_schema(def.schema_name, SCHEMA_ENCODING, def.schema())?;
                let id = open.writer.add_channel(schema, def.topic, MESSAGE_ENCODING, &BTreeMap::new())?;
                open.channels[channel] = Some(id);
                id
            }
        };
        open.sequence = open.sequence.wrapping_add(1);
        let header =
            MessageHeader { channel_id: id, sequence: open.sequence, log_time: unix_ns, publish_time: unix_ns };
        open.writer.write_to_known_channel(&header, data)?;
        open.messages += 1;
        open.bytes += data.len() as u64;
        open.bounds = (open.bounds.0.min(unix_ns), open.bounds.1.max(unix_ns));
        Ok(())
    }

    /// Whether the open batch should be cut now: incidents and health at once,
    /// logs by size or age.
    pub fn due(&self) -> bool {
        self.open.as_ref().is_some_and(|o| match self.kind {
            BatchKind::Incidents | BatchKind::Health => true,
            BatchKind::Logs => o.bytes >= self.max_bytes || o.opened.elapsed() >= self.period,
        })
    }

    pub fn cut(&mut self) -> anyhow::Result<Option<Cut>> {
        let Some(mut open) = self.open.take() else { return Ok(None) };
        open.writer.finish()?;
        let body = open.writer.into_inner().into_inner();
        Ok(Some(Cut { kind: self.kind, body, messages: open.messages, bounds: open.bounds }))
    }
}

impl Cut {
    /// The envelope, with its sequence number.
    pub fn encode(&self, robot_id: &str, segment_id: &str, seq: u64) -> Vec<u8> {
        wire::encode(
            BatchHeader {
                robot_id: robot_id.to_string(),
                seq,
                kind: self.kind,
                segment_id: segment_id.to_string(),
                messages: self.messages,
                start_unix_ns: self.bounds.0,
                end_unix_ns: self.bounds.1,
                body_len: 0,
                body_sha256: String::new(),
            },
            &self.body,
        )
    }
}

/// Which batch stream a recorded channel feeds (none: bulk upload only).
pub fn kind_of(channel: usize) -> Option<BatchKind> {
    match channel {
        super::CH_INCIDENTS => Some(BatchKind::Incidents),
        super::CH_HEALTH => Some(BatchKind::Health),
        super::CH_CONTROL | super::CH_JOINTS | super::CH_FRAMES | super::CH_EPISODES => Some(BatchKind::Logs),
        // Images, samples, transforms and calibration travel in the bulk
        // upload of whole segments only.
        _ => None,
    }
}
