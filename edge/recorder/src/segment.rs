//! One MCAP segment file: written as `ID.mcap.partial`, closed atomically
//! (finish, fsync, rename to `ID.mcap`, fsync the directory), and rebuilt from
//! its complete chunks when a crash left it unfinished.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use mcap::read::Options as ReadOptions;
use mcap::records::MessageHeader;
use mcap::{Compression, WriteOptions, Writer};

use super::catalog::{SegmentRow, SegmentState};
use super::messages::{ALL, MESSAGE_ENCODING, SCHEMA_ENCODING};

pub const PARTIAL: &str = ".mcap.partial";
pub const FINAL: &str = ".mcap";
const RECOVERING: &str = ".mcap.recovering";

/// Counts the bytes under the writer, through its seeks.
struct Tracked<W> {
    inner: W,
    pos: u64,
    /// Shared with [`SegmentWriter`]: the MCAP writer does not lend its stream.
    len: Arc<AtomicU64>,
}

impl<W> Tracked<W> {
    fn new(inner: W) -> Self {
        Self { inner, pos: 0, len: Arc::new(AtomicU64::new(0)) }
    }
}

impl<W: Write> Write for Tracked<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.pos += n as u64;
        self.len.fetch_max(self.pos, Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Seek> Seek for Tracked<W> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.pos = self.inner.seek(to)?;
        Ok(self.pos)
    }
}

/// How segments are compressed.
#[derive(Debug, Clone, Copy)]
pub struct Encoding {
    pub zstd_level: i32,
    /// Uncompressed bytes per chunk before it is compressed and written.
    pub chunk_bytes: u64,
}

fn write_options(enc: Encoding) -> WriteOptions {
    WriteOptions::new()
        .compression(Some(Compression::Zstd))
        .compression_level(enc.zstd_level.max(1) as u32)
        // Compression threads would compete with the real-time threads' cores.
        .compression_threads(0)
        .chunk_size(Some(enc.chunk_bytes))
        // Message indexes (16 uncompressed bytes a message, ~13 % of a
        // segment at 245 messages a second) serve readers that seek within a
        // chunk; the chunk indexes in the summary are what replay, recovery,
        // the cloud and Foxglove use. MCAP makes them optional.
        .emit_message_indexes(false)
        .profile("gantry")
        .library(concat!("gantry-edge ", env!("CARGO_PKG_VERSION")))
}

/// The open segment.
pub struct SegmentWriter {
    id: String,
    dir: PathBuf,
    writer: Writer<Tracked<BufWriter<File>>>,
    len: Arc<AtomicU64>,
    channels: [u16; ALL.len()],
    sequence: [u32; ALL.len()],
    bounds: Option<(u64, u64)>,
    messages: u64,
}

impl SegmentWriter {
    /// Opens `DIR/ID.mcap.partial`, with every channel declared up front so even
    /// a short segment lists them all.
    pub fn create(dir: &Path, id: &str, enc: Encoding) -> anyhow::Result<Self> {
        let path = dir.join(format!("{id}{PARTIAL}"));
        let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let tracked = Tracked::new(BufWriter::with_capacity(256 * 1024, file));
        let len = tracked.len.clone();
        let mut writer = write_options(enc).create(tracked).context("starting the MCAP file")?;
        let mut channels = [0u16; ALL.len()];
        for (slot, def) in channels.iter_mut().zip(ALL.iter()) {
            let schema = writer.add_schema(def.schema_name, SCHEMA_ENCODING, def.schema())?;
            *slot = writer.add_channel(schema, def.topic, MESSAGE_ENCODING, &BTreeMap::new())?;
        }
        Ok(Self {
            id: id.to_string(),
            dir: dir.to_path_buf(),
            writer,
            len,
            channels,
            sequence: [0; ALL.len()],
            bounds: None,
            messages: 0,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Writes one message on channel `ALL[channel]`.
    pub fn write(&mut self, channel: usize, unix_ns: u64, data: &[u8]) -> anyhow::Result<()> {
        self.sequence[channel] = self.sequence[channel].wrapping_add(1);
        let header = MessageHeader {
            channel_id: self.channels[channel],
            sequence: self.sequence[channel],
            log_time: unix_ns,
            publish_time: unix_ns,
        };
        self.writer.write_to_known_channel(&header, data)?;
        self.messages += 1;
        self.bounds = Some(self.bounds.map_or((unix_ns, unix_ns), |(a, b)| (a.min(unix_ns), b.max(unix_ns))));
        Ok(())
    }

    /// Bytes in the file so far (the open chunk counts as it is compressed).
    pub fn bytes(&self) -> u64 {
        self.len.load(Ordering::Relaxed)
    }

    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// Closes the open chunk and hands it to the OS, so a crash of the process
    /// loses at most what came after.
    pub fn flush_chunk(&mut self) -> anyhow::Result<()> {
        self.writer.flush()?;
        Ok(())
    }

    /// Finishes the file and makes it durable under its final name.
    pub fn finish(mut self, created_unix_ns: u64) -> anyhow::Result<SegmentRow> {
        self.writer.finish().context("finishing the MCAP file")?;
        let tracked = self.writer.into_inner();
        let file = tracked.inner.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        let partial = self.dir.join(format!("{}{PARTIAL}", self.id));
        let (start, end) = self.bounds.unwrap_or((created_unix_ns, created_unix_ns));
        publish(&partial, &self.dir, &self.id, SegmentState::Finalized, (start, end), self.messages, created_unix_ns)
    }
}

/// Hashes `from`, renames it to `DIR/ID.mcap` and makes the rename durable.
fn publish(
    from: &Path,
    dir: &Path,
    id: &str,
    state: SegmentState,
    (start, end): (u64, u64),
    messages: u64,
    created_unix_ns: u64,
) -> anyhow::Result<SegmentRow> {
    let (bytes, sha256) = hash_file(from)?;
    let file = format!("{id}{FINAL}");
    fs::rename(from, dir.join(&file)).with_context(|| format!("renaming {}", from.display()))?;
    sync_dir(dir)?;
    Ok(SegmentRow {
        id: id.to_string(),
        file,
        state,
        start_unix_ns: start,
        end_unix_ns: end,
        bytes,
        sha256,
        messages,
        synced: false,
        created_unix_ns,
    })
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

pub use gantry_config::wire::hash_file;

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What start-up did with an unfinished segment.
#[derive(Debug)]
pub enum Recovered {
    /// Its complete chunks, now a finalized file.
    Kept(SegmentRow),
    /// Nothing readable: moved to `quarantine/` as it was.
    Quarantined(SegmentRow, String),
}

/// Rebuilds `DIR/ID.mcap.partial` from the messages of its complete chunks.
pub fn recover(dir: &Path, id: &str, enc: Encoding, now_unix_ns: u64) -> anyhow::Result<Recovered> {
    let result = rebuild(dir, id, enc, now_unix_ns);
    if result.is_err() {
        // A full disk fails the rebuild; the partial stays for another try.
        let _ = fs::remove_file(dir.join(format!("{id}{RECOVERING}")));
    }
    result
}

fn rebuild(dir: &Path, id: &str, enc: Encoding, now_unix_ns: u64) -> anyhow::Result<Recovered> {
    let partial = dir.join(format!("{id}{PARTIAL}"));
    let mut data = fs::read(&partial).with_context(|| format!("reading {}", partial.display()))?;
    // A chunk damaged so that it would not read back ends what is kept.
    if let Some(at) = gantry_config::records::unreadable_chunk(&data) {
        data.truncate(at);
    }
    let scratch = dir.join(format!("{id}{RECOVERING}"));
    let mut kept = 0u64;
    let mut bounds: Option<(u64, u64)> = None;
    let mut reason = String::from("no complete chunk");
    match mcap::MessageStream::new_with_options(&data, ReadOptions::IgnoreEndMagic.into()) {
        Ok(stream) => {
            let file = File::create(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
            let tracked = Tracked::new(BufWriter::new(file));
            let mut writer = write_options(enc).create(tracked)?;
            for message in stream {
                match message {
                    Ok(m) => {
                        writer.write(&m)?;
                        kept += 1;
                        let t = m.log_time;
                        bounds = Some(bounds.map_or((t, t), |(a, b)| (a.min(t), b.max(t))));
                    }
                    Err(e) => {
                        reason = format!("stopped at {e}");
                        break;
                    }
                }
            }
            writer.finish()?;
            let file = writer.into_inner().inner.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
        }
        Err(e) => reason = format!("not an MCAP file: {e}"),
    }
    if kept > 0 {
        let row = publish(&scratch, dir, id, SegmentState::Recovered, bounds.unwrap_or_default(), kept, now_unix_ns)?;
        fs::remove_file(&partial)?;
        sync_dir(dir)?;
        return Ok(Recovered::Kept(row));
    }
    let _ = fs::remove_file(&scratch);
    let qdir = dir.join("quarantine");
    fs::create_dir_all(&qdir)?;
    let file = format!("quarantine/{id}{PARTIAL}");
    let (bytes, sha256) = hash_file(&partial)?;
    fs::rename(&partial, dir.join(&file))?;
    sync_dir(dir)?;
    sync_dir(&qdir)?;
    let row = SegmentRow {
        id: id.to_string(),
        file,
        state: SegmentState::Quarantined,
        start_unix_ns: now_unix_ns,
        end_unix_ns: now_unix_ns,
        bytes,
        sha256,
        messages: 0,
        synced: false,
        created_unix_ns: now_unix_ns,
    };
    Ok(Recovered::Quarantined(row, reason))
}

/// Reads a finished segment's summary: message count and time bounds.
pub fn summarize(path: &Path) -> anyhow::Result<(u64, (u64, u64))> {
    let data = fs::read(path)?;
    let summary = mcap::Summary::read(&data)?.context("no summary section")?;
    let stats = summary.stats.context("no statistics record")?;
    Ok((stats.message_count, (stats.message_start_time, stats.message_end_time)))
}
