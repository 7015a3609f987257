//! Data quality checks, run on every stored log batch at ingestion. A batch
//! that fails one is stored all the same, with its flags (the catalog's
//! `flags`, and each exported row's `flags` column): flagged data is labelled,
//! never dropped.
//!
//! | flag | meaning |
//! | --- | --- |
//! | `timestamps_not_increasing` | a channel's `log_time` went backwards or repeated |
//! | `action_out_of_bounds` | a commanded joint position outside `[-quality.max_abs_joint_rad, +…]` |
//! | `label_contradicts_events` | an episode marked successful with governor rejections or incidents inside it, or a failure without a reason |
//! | `robot_unhealthy` | a health snapshot with the robot not running normally, a dead firmware link or a motor over `quality.max_motor_temp_c` |
//! | `video_corrupted` | a camera image that does not decode as a whole JPEG, images of different sizes in one segment, or fewer images than the segment's statistics count |
//! | `malformed_messages` | messages that do not match their channel's schema, or chunks that do not read back (kept in the stored batch, left out of the tables) |

use std::collections::HashMap;

use gantry_config::records::{foxglove, ControlMsg, EpisodeMsg, FrameMsg, HealthMsg, IncidentMsg, JointStateMsg};

/// What a batch holds, parsed.
#[derive(Debug, Default)]
pub struct Parsed {
    pub control: Vec<ControlMsg>,
    pub joints: Vec<JointStateMsg>,
    pub frames: Vec<FrameMsg>,
    pub incidents: Vec<IncidentMsg>,
    pub episodes: Vec<EpisodeMsg>,
    pub health: Vec<serde_json::Value>,
    /// (log time, JPEG bytes) of camera images.
    pub images: Vec<(u64, Vec<u8>)>,
    /// Camera images the MCAP's statistics record counts, where it has one.
    pub images_expected: Option<u64>,
    /// Chunks that could not be read back (bad CRC, bad compression, cut short).
    pub damaged_chunks: u64,
    /// Messages read (those of damaged chunks not included).
    pub messages: u64,
    /// Channels whose `log_time` did not strictly increase.
    pub out_of_order: Vec<String>,
    /// Messages that do not match their channel's schema (kept in the stored
    /// batch, left out of the tables).
    pub unparsed: u64,
}

/// Parses an MCAP body, chunk by chunk where it has a summary, so that one
/// damaged chunk costs only its own messages (counted in `damaged_chunks`).
/// Without a summary it is read as a stream, and damage is an error. A
/// message that does not match its schema is counted.
pub fn parse(body: &[u8]) -> anyhow::Result<Parsed> {
    let mut p = Parsed::default();
    let mut last: HashMap<String, u64> = HashMap::new();
    let summary = mcap::Summary::read(body).ok().flatten().filter(|s| !s.chunk_indexes.is_empty());
    let Some(summary) = summary else {
        if let Some(at) = gantry_config::records::unreadable_chunk(body) {
            anyhow::bail!("the chunk at byte {at} does not read back within its declared sizes");
        }
        for m in mcap::MessageStream::new(body)? {
            p.add(&m?, &mut last);
        }
        return Ok(p);
    };
    p.images_expected = summary.stats.as_ref().map(|st| {
        summary
            .channels
            .iter()
            .filter(|(_, c)| c.topic == "/camera/image")
            .map(|(id, _)| st.channel_message_counts.get(id).copied().unwrap_or(0))
            .sum()
    });
    let mut chunks = summary.chunk_indexes.clone();
    chunks.sort_by_key(|c| c.chunk_start_offset);
    for index in &chunks {
        // Each chunk inflated once: checked, then read from the same buffer.
        let contents = usize::try_from(index.chunk_start_offset)
            .ok()
            .and_then(|at| gantry_config::records::chunk_contents(body, at));
        let Some(contents) = contents else {
            p.damaged_chunks += 1;
            continue;
        };
        for record in mcap::read::LinearReader::sans_magic(&contents) {
            match record {
                Ok(mcap::records::Record::Message { header, data }) => {
                    let Some(channel) = summary.channels.get(&header.channel_id) else {
                        p.damaged_chunks += 1;
                        break;
                    };
                    let m = mcap::Message {
                        channel: channel.clone(),
                        sequence: header.sequence,
                        log_time: header.log_time,
                        publish_time: header.publish_time,
                        data,
                    };
                    p.add(&m, &mut last);
                }
                Ok(_) => {}
                Err(_) => {
                    p.damaged_chunks += 1;
                    break;
                }
            }
        }
    }
    Ok(p)
}

impl Parsed {
    fn add(&mut self, m: &mcap::Message<'_>, last: &mut HashMap<String, u64>) {
        self.messages += 1;
        let topic = m.channel.topic.as_str();
        if let Some(prev) = last.insert(topic.to_string(), m.log_time) {
            if m.log_time <= prev && !self.out_of_order.iter().any(|t| t == topic) {
                self.out_of_order.push(topic.to_string());
            }
        }
        let proto = m.channel.message_encoding == "protobuf";
        let ok = match topic {
            "/control" => decode(proto, &m.data).map(|v| self.control.push(v)),
            "/joint_states" => decode(proto, &m.data).map(|v| self.joints.push(v)),
            "/frames" => decode(proto, &m.data).map(|v| self.frames.push(v)),
            "/incidents" => decode(proto, &m.data).map(|v| self.incidents.push(v)),
            "/episodes" => decode(proto, &m.data).map(|v| self.episodes.push(v)),
            // Health is read by field name; the protobuf message has the JSON's names.
            "/health" if proto => decode::<HealthMsg>(true, &m.data)
                .and_then(|h| serde_json::to_value(h).ok())
                .map(|v| self.health.push(v)),
            "/health" => json(&m.data).map(|v| self.health.push(v)),
            "/camera/image" if proto => {
                decode::<foxglove::CompressedImage>(true, &m.data).map(|img| self.images.push((m.log_time, img.data)))
            }
            "/camera/image" => json::<gantry_config::records::CompressedImageMsg>(&m.data).map(|img| {
                use base64::Engine as _;
                let jpeg = base64::engine::general_purpose::STANDARD.decode(img.data.as_bytes()).unwrap_or_default();
                self.images.push((m.log_time, jpeg));
            }),
            _ => Some(()),
        };
        if ok.is_none() {
            self.unparsed += 1;
        }
    }
}

fn json<T: serde::de::DeserializeOwned>(data: &[u8]) -> Option<T> {
    serde_json::from_slice(data).ok()
}

/// A message in its channel's encoding: protobuf (recordings since schema
/// version 2) or JSON (before).
fn decode<T: serde::de::DeserializeOwned + prost::Message + Default>(proto: bool, data: &[u8]) -> Option<T> {
    if proto {
        T::decode(data).ok()
    } else {
        json(data)
    }
}

/// Limits the checks use.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_abs_joint_rad: f32,
    pub max_motor_temp_c: f32,
    pub max_goal_step_rad: f32,
    pub min_blur_score: f32,
}

impl From<&gantry_config::cloud::Quality> for Limits {
    fn from(q: &gantry_config::cloud::Quality) -> Self {
        Self {
            max_abs_joint_rad: q.max_abs_joint_rad,
            max_motor_temp_c: q.max_motor_temp_c,
            max_goal_step_rad: q.max_goal_step_rad,
            min_blur_score: q.min_blur_score,
        }
    }
}

pub const TIMESTAMPS: &str = "timestamps_not_increasing";
pub const BOUNDS: &str = "action_out_of_bounds";
pub const LABEL: &str = "label_contradicts_events";
pub const UNHEALTHY: &str = "robot_unhealthy";
pub const VIDEO: &str = "video_corrupted";
pub const MALFORMED: &str = "malformed_messages";

// Row flags: what happened on one row (a tick, a frame, a task). The lake's
// rows carry these; a task carries its own and those of the rows inside it.
pub const REJECTED: &str = "rejected";
pub const STOPPED: &str = "stopped";
pub const LINK_DOWN: &str = "link_down";
pub const OUTLIER: &str = "action_outlier";
pub const LATE: &str = "late";
pub const INFERENCE_FAILED: &str = "inference_failed";
pub const STALE: &str = "stale_joint_state";
pub const TRUNCATED: &str = "truncated";
pub const NO_COMMAND: &str = "no_command";
pub const BLURRED: &str = "blurred";

/// A joint state older than this when the tick read it is stale: two control
/// ticks at 100 Hz. (The governor refuses to act on one past
/// `governor.command_max_age_ms`; this flags the data well before that.)
pub const STALE_JOINT_STATE_NS: u64 = 20_000_000;

/// The governor checks that fail when the firmware link is down.
const LINK_CHECKS: [&str; 2] = ["firmware_link", "joint_state_fresh"];

/// Flags of one action; `prev` is the previous tick's action in the batch.
pub fn action_flags(c: &ControlMsg, prev: Option<&ControlMsg>, l: &Limits) -> Vec<&'static str> {
    let mut f = Vec::new();
    if prev.is_some_and(|p| c.unix_ns <= p.unix_ns) {
        f.push(TIMESTAMPS);
    }
    if !action_in_bounds(c, l) {
        f.push(BOUNDS);
    }
    let jump = prev.is_some_and(|p| {
        p.goal_rad.len() == c.goal_rad.len()
            && p.goal_rad.iter().zip(&c.goal_rad).any(|(a, b)| (b - a).abs() > l.max_goal_step_rad)
    });
    if jump {
        f.push(OUTLIER);
    }
    if !c.approved {
        f.push(REJECTED);
    }
    if c.rejected_by.iter().any(|r| LINK_CHECKS.contains(&r.as_str())) {
        f.push(LINK_DOWN);
    }
    if !matches!(c.mode.as_str(), "running" | "degraded") {
        f.push(STOPPED);
    }
    f
}

/// Flags of one joint state.
pub fn joint_state_flags(j: &JointStateMsg, prev: Option<&JointStateMsg>) -> Vec<&'static str> {
    let mut f = Vec::new();
    if prev.is_some_and(|p| j.unix_ns <= p.unix_ns) {
        f.push(TIMESTAMPS);
    }
    if j.age_ns > STALE_JOINT_STATE_NS {
        f.push(STALE);
    }
    f
}

/// Flags of one inference.
pub fn frame_flags(fr: &FrameMsg, prev: Option<&FrameMsg>) -> Vec<&'static str> {
    let mut f = Vec::new();
    if prev.is_some_and(|p| fr.unix_ns <= p.unix_ns) {
        f.push(TIMESTAMPS);
    }
    if fr.late {
        f.push(LATE);
    }
    if !fr.ok {
        f.push(INFERENCE_FAILED);
    }
    f
}

/// Flags of one health snapshot.
pub fn health_flags(h: &serde_json::Value, l: &Limits) -> Vec<&'static str> {
    let mut f = Vec::new();
    if !health_ok(h, l) {
        f.push(UNHEALTHY);
    }
    if h["link_alive"].as_bool() == Some(false) {
        f.push(LINK_DOWN);
    }
    f
}

pub fn action_in_bounds(c: &ControlMsg, l: &Limits) -> bool {
    c.command_rad.iter().chain(&c.goal_rad).all(|q| q.is_finite() && q.abs() <= l.max_abs_joint_rad)
}

/// An episode's own flags: its label against what happened inside it.
pub fn episode_flags(e: &EpisodeMsg, incidents: &[IncidentMsg]) -> Vec<&'static str> {
    let inside = incidents.iter().any(|i| (e.start_unix_ns..=e.end_unix_ns).contains(&i.unix_ns));
    let contradicts =
        if e.success { e.rejects > 0 || inside } else { e.failure_reason.as_deref().is_none_or(str::is_empty) };
    let mut f = Vec::new();
    if contradicts {
        f.push(LABEL);
    }
    if e.failure_reason.as_deref() == Some("interrupted") {
        f.push(TRUNCATED);
    }
    f
}

pub fn health_ok(h: &serde_json::Value, l: &Limits) -> bool {
    let running = h["mode"].as_str() == Some("running");
    let link = h["link_alive"].as_bool().unwrap_or(true);
    let hot = h["motor_temp_c"]
        .as_array()
        .is_some_and(|t| t.iter().any(|v| v.as_f64().unwrap_or(0.0) > f64::from(l.max_motor_temp_c)));
    running && link && !hot
}

/// The largest image side the video check decodes.
const MAX_IMAGE_SIDE: usize = 4096;

/// A whole JPEG (SOI to EOI) decoded in strict mode, into `colorspace` (the
/// decoder's default without one): width, height and pixels.
fn strict_decode(
    b: &[u8],
    colorspace: Option<zune_jpeg::zune_core::colorspace::ColorSpace>,
) -> Option<(usize, usize, Vec<u8>)> {
    if !(b.len() > 4 && b.starts_with(&[0xFF, 0xD8]) && b.ends_with(&[0xFF, 0xD9])) {
        return None;
    }
    // A forged header could ask for a 16k × 16k decode; robots send at most 1080p.
    let mut options = zune_jpeg::zune_core::options::DecoderOptions::default()
        .set_strict_mode(true)
        .set_max_width(MAX_IMAGE_SIDE)
        .set_max_height(MAX_IMAGE_SIDE);
    if let Some(c) = colorspace {
        options = options.jpeg_set_out_colorspace(c);
    }
    // zune-jpeg can panic on crafted data (an IDCT overflow, found by
    // tests/tests/fuzz.rs): that is a corrupt image, not a reason to stop ingesting.
    std::panic::catch_unwind(|| {
        let mut decoder = zune_jpeg::JpegDecoder::new_with_options(b, options);
        let pixels = decoder.decode().ok()?;
        let info = decoder.info()?;
        Some((usize::from(info.width), usize::from(info.height), pixels))
    })
    .ok()
    .flatten()
}

/// A whole JPEG: SOI to EOI, and it decodes without error (strict mode);
/// returns its width and height.
pub fn jpeg_size(b: &[u8]) -> Option<(usize, usize)> {
    strict_decode(b, None).map(|(w, h, _)| (w, h))
}

/// A whole JPEG, decoded once: width, height and RGB8 pixels.
pub fn decode_jpeg(b: &[u8]) -> Option<(usize, usize, Vec<u8>)> {
    strict_decode(b, Some(zune_jpeg::zune_core::colorspace::ColorSpace::RGB))
        .filter(|(w, h, rgb)| rgb.len() == w * h * 3)
}

/// Sharpness: the variance of the Laplacian of the image's luma (low:
/// blurred or featureless). RGB8, interleaved.
pub fn blur_score(rgb: &[u8], w: usize, h: usize) -> f64 {
    if w < 3 || h < 3 || rgb.len() < w * h * 3 {
        return 0.0;
    }
    let luma: Vec<f64> = rgb
        .chunks_exact(3)
        .take(w * h)
        .map(|p| 0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2]))
        .collect();
    let (mut sum, mut sq, mut n) = (0.0, 0.0, 0.0);
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            let i = y * w + x;
            let lap = luma[i - 1] + luma[i + 1] + luma[i - w] + luma[i + w] - 4.0 * luma[i];
            sum += lap;
            sq += lap * lap;
            n += 1.0;
        }
    }
    let mean = sum / n;
    sq / n - mean * mean
}

/// The video check: every image decodes, all have one size, and none of
/// those the statistics count is missing.
pub fn video_ok(p: &Parsed) -> bool {
    let mut size = None;
    let whole = p.images.iter().all(|(_, b)| jpeg_size(b).is_some_and(|s| *size.get_or_insert(s) == s));
    whole && p.images_expected.is_none_or(|n| n == p.images.len() as u64)
}

/// The batch's flags, sorted.
pub fn batch_flags(p: &Parsed, l: &Limits) -> Vec<String> {
    let mut flags = Vec::new();
    if !p.out_of_order.is_empty() {
        flags.push(TIMESTAMPS);
    }
    if !p.control.iter().all(|c| action_in_bounds(c, l)) {
        flags.push(BOUNDS);
    }
    if p.episodes.iter().any(|e| episode_flags(e, &p.incidents).contains(&LABEL)) {
        flags.push(LABEL);
    }
    if !p.health.iter().all(|h| health_ok(h, l)) {
        flags.push(UNHEALTHY);
    }
    if !video_ok(p) {
        flags.push(VIDEO);
    }
    if p.unparsed > 0 || p.damaged_chunks > 0 {
        flags.push(MALFORMED);
    }
    flags.sort_unstable();
    flags.into_iter().map(String::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn episode(success: bool, rejects: u64, reason: Option<&str>) -> EpisodeMsg {
        EpisodeMsg {
            boot_id: "boot-1".into(),
            kind: String::new(),
            task_id: "t".into(),
            robot_id: "r".into(),
            model_version: "m".into(),
            start_unix_ns: 100,
            end_unix_ns: 200,
            success,
            failure_reason: reason.map(Into::into),
            ticks: 10,
            rejects,
        }
    }

    #[test]
    fn labels_are_checked_against_events() {
        assert!(episode_flags(&episode(true, 0, None), &[]).is_empty());
        assert_eq!(episode_flags(&episode(true, 3, None), &[]), [LABEL]);
        assert!(episode_flags(&episode(false, 3, Some("governor:joint_limits")), &[]).is_empty());
        assert_eq!(episode_flags(&episode(false, 0, None), &[]), [LABEL]);
    }

    fn jpeg(w: u16, h: u16) -> Vec<u8> {
        let rgb: Vec<u8> = (0..usize::from(w) * usize::from(h) * 3).map(|i| (i * 31 % 251) as u8).collect();
        let mut out = Vec::new();
        jpeg_encoder::Encoder::new(&mut out, 80).encode(&rgb, w, h, jpeg_encoder::ColorType::Rgb).unwrap();
        out
    }

    fn parsed(images: Vec<Vec<u8>>, expected: Option<u64>) -> Parsed {
        Parsed {
            images: images.into_iter().enumerate().map(|(i, b)| (i as u64, b)).collect(),
            images_expected: expected,
            ..Parsed::default()
        }
    }

    #[test]
    fn a_blurred_image_scores_lower_than_a_sharp_one() {
        let (w, h) = (64, 48);
        let sharp: Vec<u8> =
            (0..w * h).flat_map(|i| if (i % w / 4 + i / w / 4) % 2 == 0 { [255; 3] } else { [0; 3] }).collect();
        // The same checkerboard, box-blurred over 5 × 5.
        let mut blurred = sharp.clone();
        for y in 2..h - 2 {
            for x in 2..w - 2 {
                let mut acc = 0u32;
                for dy in 0..5 {
                    for dx in 0..5 {
                        acc += u32::from(sharp[((y + dy - 2) * w + x + dx - 2) * 3]);
                    }
                }
                blurred[(y * w + x) * 3..][..3].fill((acc / 25) as u8);
            }
        }
        let flat = vec![128u8; w * h * 3];
        let (s, b, f) = (blur_score(&sharp, w, h), blur_score(&blurred, w, h), blur_score(&flat, w, h));
        assert!(s > 4.0 * b && b > f, "sharp {s}, blurred {b}, flat {f}");
        assert_eq!(f, 0.0);
        let jpeg = jpeg(32, 16);
        let (jw, jh, rgb) = decode_jpeg(&jpeg).unwrap();
        assert_eq!((jw, jh, rgb.len()), (32, 16, 32 * 16 * 3));
        assert!(decode_jpeg(&jpeg[..jpeg.len() / 2]).is_none());
    }

    #[test]
    fn jpegs_must_decode_whole() {
        let good = jpeg(32, 16);
        assert_eq!(jpeg_size(&good), Some((32, 16)));
        assert_eq!(jpeg_size(&good[..good.len() / 2]), None, "cut short");
        let mut headless = good.clone();
        headless.drain(2..200);
        assert_eq!(jpeg_size(&headless), None, "tables missing");
        assert_eq!(jpeg_size(&[0xFF, 0xD8, 1, 2, 0xFF, 0xD9]), None, "markers only");
        assert_eq!(jpeg_size(&[]), None);
    }

    #[test]
    fn video_needs_one_size_and_every_counted_frame() {
        assert!(video_ok(&parsed(vec![jpeg(32, 16), jpeg(32, 16)], Some(2))));
        assert!(video_ok(&parsed(vec![], None)));
        assert!(!video_ok(&parsed(vec![jpeg(32, 16), jpeg(16, 16)], Some(2))), "sizes differ");
        assert!(!video_ok(&parsed(vec![jpeg(32, 16)], Some(2))), "a counted frame is missing");
    }

    /// A segment of `n` camera images, one per chunk, and where those chunks lie.
    fn segment(n: u32) -> (Vec<u8>, Vec<std::ops::Range<usize>>) {
        use base64::Engine as _;
        let mut out = std::io::Cursor::new(Vec::new());
        let mut w = mcap::WriteOptions::new()
            .compression(Some(mcap::Compression::Zstd))
            .chunk_size(Some(1))
            .create(&mut out)
            .unwrap();
        let schema = w.add_schema("foxglove.CompressedImage", "jsonschema", b"{}").unwrap();
        let ch = w.add_channel(schema, "/camera/image", "json", &Default::default()).unwrap();
        for i in 0..n {
            let msg = gantry_config::records::CompressedImageMsg {
                timestamp: gantry_config::records::Time { sec: i, nsec: 0 },
                frame_id: "camera".into(),
                data: base64::engine::general_purpose::STANDARD.encode(jpeg(32, 16)),
                format: "jpeg".into(),
            };
            let header = mcap::records::MessageHeader {
                channel_id: ch,
                sequence: i,
                log_time: u64::from(i) + 1,
                publish_time: u64::from(i) + 1,
            };
            w.write_to_known_channel(&header, &serde_json::to_vec(&msg).unwrap()).unwrap();
        }
        let summary = w.finish().unwrap();
        drop(w);
        let chunks = summary
            .chunk_indexes
            .iter()
            .filter(|c| !c.message_index_offsets.is_empty())
            .map(|c| c.chunk_start_offset as usize..(c.chunk_start_offset + c.chunk_length) as usize)
            .collect();
        (out.into_inner(), chunks)
    }

    #[test]
    fn a_damaged_chunk_costs_its_frames_only_and_is_flagged() {
        let limits =
            Limits { max_abs_joint_rad: 3.2, max_motor_temp_c: 80.0, max_goal_step_rad: 0.5, min_blur_score: 20.0 };
        let (whole, chunks) = segment(3);
        assert_eq!(chunks.len(), 3);
        let p = parse(&whole).unwrap();
        assert_eq!((p.images.len(), p.images_expected, p.damaged_chunks), (3, Some(3), 0));
        assert!(batch_flags(&p, &limits).is_empty());

        let mut damaged = whole.clone();
        let middle = &chunks[1];
        damaged[middle.end - 8] ^= 0x5A;
        let p = parse(&damaged).unwrap();
        assert_eq!((p.images.len(), p.images_expected, p.damaged_chunks), (2, Some(3), 1));
        assert_eq!(batch_flags(&p, &limits), [MALFORMED, VIDEO]);
    }

    #[test]
    fn a_chunk_declaring_a_huge_size_is_damaged_not_fatal() {
        let (whole, chunks) = segment(3);
        assert_eq!(gantry_config::records::unreadable_chunk(&whole), None);
        // The chunk's uncompressed size sits 25 bytes into its record.
        let mut forged = whole.clone();
        let at = chunks[1].start + 25;
        forged[at..at + 8].copy_from_slice(&(u64::MAX / 3).to_le_bytes());
        assert_eq!(gantry_config::records::unreadable_chunk(&forged), Some(chunks[1].start));
        let p = parse(&forged).unwrap();
        assert_eq!((p.images.len(), p.damaged_chunks), (2, 1));
        // Without a summary to go by, the body is refused as a whole.
        assert!(parse(&forged[..chunks[2].end]).is_err());
    }

    #[test]
    fn a_record_inside_a_chunk_declaring_a_huge_length_is_damaged_not_fatal() {
        use std::io::Write as _;
        // An uncompressed chunk (so the inner record is plain to forge):
        // one message record whose length claims a petabyte.
        let mut records = vec![0x05];
        records.extend_from_slice(&(1u64 << 50).to_le_bytes());
        records.extend_from_slice(&[0; 22]);
        let mut chunk = Vec::new();
        chunk.extend_from_slice(&[0u8; 16]);
        chunk.extend_from_slice(&(records.len() as u64).to_le_bytes());
        chunk.extend_from_slice(&0u32.to_le_bytes());
        chunk.extend_from_slice(&0u32.to_le_bytes());
        chunk.extend_from_slice(&(records.len() as u64).to_le_bytes());
        chunk.extend_from_slice(&records);
        let mut file = b"\x89MCAP0\r\n".to_vec();
        file.write_all(&[0x06]).unwrap();
        file.write_all(&(chunk.len() as u64).to_le_bytes()).unwrap();
        file.write_all(&chunk).unwrap();
        assert_eq!(gantry_config::records::unreadable_chunk(&file), Some(8));
        assert!(parse(&file).is_err());
    }
}
