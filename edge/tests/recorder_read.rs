//! A recorded segment read back through the `mcap` crate's reader (a path
//! independent of the writer): every channel is there with its schema, every
//! message is counted, every payload parses, images are JPEG.

mod common;

use std::collections::BTreeMap;

use base64::Engine as _;
use gantry_edge::governor::{Check, Command, Incident};
use gantry_edge::health::HealthSnapshot;
use gantry_edge::record::messages::{
    self, CompressedImageMsg, ControlMsg, EpisodeMsg, FrameMsg, IncidentMsg, JointStateMsg,
};
use gantry_edge::record::taps::{FrameRecord, Thumb};
use gantry_edge::record::Recorder;

#[test]
fn every_channel_and_message_count_reads_back() {
    let tmp = tempfile::tempdir().unwrap();
    // Segments of 200 kB: the run spans several files.
    let (mut rec, _) = Recorder::open(common::settings(tmp.path(), 200_000, u64::MAX)).unwrap();
    for i in 0..2500 {
        rec.record_control(&common::tick(i));
    }
    for i in 0..300u64 {
        rec.record_frame(&FrameRecord {
            frame_seq: i,
            capture_ns: 1_000_000_000 + i * 33_333_333,
            done_ns: 1_000_000_000 + i * 33_333_333 + 9_000_000,
            ok: true,
            ..FrameRecord::default()
        });
    }
    for i in 0..5u64 {
        rec.record_incident(&Incident {
            time_ns: 2_000_000_000 + i,
            check: Check::WorkspaceClear,
            failed: 1 << (Check::WorkspaceClear as u16) | 1 << (Check::JointVelocity as u16),
            value: 0.4,
            limit: 0.5,
            measure: gantry_edge::governor::Measure::DistanceM,
            joint: None,
            rejected: Command::default(),
            substituted: Command::default(),
            frame_seq: i,
        });
    }
    for i in 0..4 {
        let unix_ns = 1_700_000_000_000_000_000 + i;
        rec.record_health(unix_ns, &HealthSnapshot { unix_ns, robot_id: "robot-t".into(), ..Default::default() });
    }
    for i in 0..30u64 {
        let (w, h) = (160u32, 90u32);
        let rgb: Vec<u8> = (0..w * h * 3).map(|k| ((k as u64 * 7 + i * 13) % 251) as u8).collect();
        rec.record_thumb(&Thumb {
            frame_seq: i,
            capture_ns: 1_000_000_000 + i * 33_333_333,
            width: w,
            height: h,
            rgb: rgb.into(),
        });
    }
    rec.close();

    let (rec, _) = Recorder::open(common::settings(tmp.path(), 200_000, u64::MAX)).unwrap();
    let rows = rec.catalog().all().unwrap();
    assert!(rows.len() >= 2, "the run rolled over segments: {}", rows.len());

    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut summary_counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut jpegs = 0;
    for row in &rows {
        let data = std::fs::read(tmp.path().join("segments").join(&row.file)).unwrap();
        let summary = mcap::Summary::read(&data).unwrap().expect("a summary section");
        assert!(summary.chunk_indexes.iter().all(|c| c.compression == "zstd"), "chunks are zstd-compressed");
        let channels: BTreeMap<u16, String> = summary.channels.iter().map(|(id, c)| (*id, c.topic.clone())).collect();
        assert_eq!(channels.len(), messages::ALL.len(), "every channel is declared in every segment");
        for def in messages::ALL {
            let ch = summary.channels.values().find(|c| c.topic == def.topic).expect(def.topic);
            let schema = ch.schema.as_ref().expect("a schema");
            assert_eq!((schema.name.as_str(), schema.encoding.as_str()), (def.schema_name, "jsonschema"));
            assert_eq!(ch.message_encoding, "json");
            serde_json::from_slice::<serde_json::Value>(&schema.data).expect("the schema is JSON");
        }
        for (id, n) in &summary.stats.as_ref().unwrap().channel_message_counts {
            *summary_counts.entry(channels[id].clone()).or_default() += n;
        }
        let mut n = 0;
        for m in mcap::MessageStream::new(&data).unwrap() {
            let m = m.unwrap();
            n += 1;
            let topic = m.channel.topic.as_str();
            *counts.entry(topic.to_string()).or_default() += 1;
            let d = &m.data;
            match topic {
                "/control" => drop(serde_json::from_slice::<ControlMsg>(d).unwrap()),
                "/joint_states" => drop(serde_json::from_slice::<JointStateMsg>(d).unwrap()),
                "/frames" => drop(serde_json::from_slice::<FrameMsg>(d).unwrap()),
                "/incidents" => {
                    let i: IncidentMsg = serde_json::from_slice(d).unwrap();
                    assert_eq!(i.failed, ["workspace_clear", "joint_velocity"]);
                }
                "/episodes" => drop(serde_json::from_slice::<EpisodeMsg>(d).unwrap()),
                "/health" => drop(serde_json::from_slice::<HealthSnapshot>(d).unwrap()),
                "/camera/image" => {
                    let img: CompressedImageMsg = serde_json::from_slice(d).unwrap();
                    let jpeg = base64::engine::general_purpose::STANDARD.decode(img.data).unwrap();
                    assert_eq!(&jpeg[..3], &[0xFF, 0xD8, 0xFF], "a JPEG");
                    assert_eq!(img.format, "jpeg");
                    jpegs += 1;
                }
                other => panic!("unexpected topic {other}"),
            }
        }
        assert_eq!(n, row.messages, "{}: catalog message count", row.file);
    }
    let expected: BTreeMap<String, u64> = [
        ("/control", 2500),
        ("/joint_states", 2500),
        ("/frames", 300),
        ("/incidents", 5),
        // Two full 10 s episodes and the one cut short by close().
        ("/episodes", 3),
        ("/health", 4),
        ("/camera/image", 30),
    ]
    .into_iter()
    .map(|(t, n)| (t.to_string(), n))
    .collect();
    assert_eq!(counts, expected);
    assert_eq!(summary_counts, expected, "summary statistics agree");
    assert_eq!(jpegs, 30);
}
