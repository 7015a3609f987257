//! A recorded segment read back through the `mcap` crate's reader (a path
//! independent of the writer): every channel is there with its protobuf
//! schema, every message is counted, every payload decodes, images are JPEG.
//! (`tests/tests/recording.rs` reads them with Python's `mcap` and protobuf.)

mod common;

use std::collections::BTreeMap;

use gantry_edge::governor::{Check, Command, Incident};
use gantry_edge::health::HealthSnapshot;
use gantry_edge::record::messages::{
    self, foxglove, ArmModelMsg, ControlMsg, EpisodeMsg, FrameMsg, HealthMsg, IncidentMsg, JointStateMsg,
    ReplayTickMsg, RobotConfigMsg,
};
use gantry_edge::record::replay::ReplayTick;
use gantry_edge::record::taps::{FrameRecord, Thumb};
use gantry_edge::record::Recorder;
use prost::Message as _;

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
        rec.record_health(&HealthSnapshot { unix_ns, robot_id: "robot-t".into(), ..Default::default() }.to_record());
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
            assert_eq!((schema.name.as_str(), schema.encoding.as_str()), (def.schema_name, "protobuf"));
            assert_eq!(ch.message_encoding, "protobuf");
            let short = def.schema_name.rsplit('.').next().unwrap();
            assert!(
                schema.data.windows(short.len()).any(|w| w == short.as_bytes()),
                "{}: the descriptor set defines {short}",
                def.topic
            );
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
                "/control" => drop(ControlMsg::decode(&d[..]).unwrap()),
                "/joint_states" => drop(JointStateMsg::decode(&d[..]).unwrap()),
                "/frames" => drop(FrameMsg::decode(&d[..]).unwrap()),
                "/incidents" => {
                    let i = IncidentMsg::decode(&d[..]).unwrap();
                    assert_eq!(i.failed, ["workspace_clear", "joint_velocity"]);
                }
                "/episodes" => drop(EpisodeMsg::decode(&d[..]).unwrap()),
                "/health" => assert_eq!(HealthMsg::decode(&d[..]).unwrap().robot_id, "robot-t"),
                "/camera/image" => {
                    let img = foxglove::CompressedImage::decode(&d[..]).unwrap();
                    assert_eq!(&img.data[..3], &[0xFF, 0xD8, 0xFF], "a JPEG, as raw bytes");
                    assert_eq!(img.format, "jpeg");
                    assert_eq!(img.timestamp.unwrap().unix_ns(), m.log_time);
                    jpegs += 1;
                }
                "/tf" => assert_eq!(foxglove::FrameTransforms::decode(&d[..]).unwrap().transforms.len(), 7),
                "/tf_static" => assert_eq!(foxglove::FrameTransforms::decode(&d[..]).unwrap().transforms.len(), 1),
                "/arm" => assert_eq!(ArmModelMsg::decode(&d[..]).unwrap().joints, 6),
                "/config" => assert!(RobotConfigMsg::decode(&d[..]).unwrap().robot_id == "robot-t"),
                "/replay/ticks" => {
                    let t = ReplayTickMsg::decode(&d[..]).unwrap();
                    ReplayTick::decode(&t.encoding, &t.data).unwrap();
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
        // The arm at 10 Hz of the 100 Hz ticks; the camera's place and the
        // arm's model at the start of every segment.
        ("/tf", 250),
        ("/tf_static", rows.len() as u64),
        ("/arm", rows.len() as u64),
        ("/config", rows.len() as u64),
    ]
    .into_iter()
    .map(|(t, n)| (t.to_string(), n))
    .collect();
    // No pre-roll is configured here, so no incident window (nor replay
    // ticks, nor full-rate images): tests/tests/recording.rs has them.
    assert_eq!(counts, expected);
    assert_eq!(summary_counts, expected, "summary statistics agree");
    assert_eq!(jpegs, 30);
}
