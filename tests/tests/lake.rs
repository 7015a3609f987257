//! The data lake: a week of three robots' logs (compressed in time) with bad
//! data injected — out-of-order timestamps, an action outside the workspace, a
//! success label that contradicts its episode's events, an unhealthy robot, a
//! corrupt camera image — is flagged exactly where the bad data is, and clean
//! data is not. The Parquet export is read back with the `parquet` crate's own
//! reader, partition by partition; re-running it adds nothing, and a new batch
//! adds only its own rows.

use std::collections::BTreeMap;
use std::time::Duration;

use gantry_config::records::{foxglove, ControlMsg, EpisodeMsg, FrameMsg, HealthMsg, IncidentMsg, JointStateMsg};
use gantry_config::wire::{BatchKind, DAY_NS};
use gantry_edge::record::batch::Batcher;
use gantry_edge::record::{CH_CONTROL, CH_EPISODES, CH_FRAMES, CH_HEALTH, CH_IMAGES, CH_INCIDENTS, CH_JOINTS};
use gantry_sync::lake::{Exporter, LakeState};
use gantry_sync::quality;
use object_store::path::Path as ObjectPath;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use prost::Message as _;

/// 2026-11-16 00:00 UTC, a Monday.
const WEEK_START: u64 = 1_794_787_200_000_000_000;
const ROBOTS: usize = 3;
const DAYS: u64 = 7;
const TICKS: u64 = 40;
const FRAMES: u64 = 12;

/// What to spoil in one day's batch.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fault {
    None,
    OutOfOrder,
    OutOfBounds,
    LabelContradicts,
    Unhealthy,
    CorruptImage,
}

/// A real 64×36 JPEG, the same every time.
fn jpeg() -> Vec<u8> {
    let rgb: Vec<u8> = (0..64 * 36 * 3).map(|i| (i * 13 % 241) as u8).collect();
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, 75).encode(&rgb, 64, 36, jpeg_encoder::ColorType::Rgb).unwrap();
    out
}

/// One day's work of a robot in one batch: control ticks, frames, an
/// episode, a health snapshot and a camera image.
fn day_batch(robot: &str, day: u64, seq: u64, fault: Fault) -> Vec<u8> {
    let t0 = WEEK_START + day * DAY_NS + 8 * 3_600_000_000_000;
    let mut b = Batcher::new(BatchKind::Logs, 10_000_000, Duration::from_secs(3600));
    for i in 0..TICKS {
        let mut t = t0 + i * 10_000_000;
        if fault == Fault::OutOfOrder && i == TICKS / 2 {
            t -= 50_000_000;
        }
        let q = if fault == Fault::OutOfBounds && i == 7 { 4.5 } else { 0.3 };
        let c = ControlMsg {
            boot_id: "boot-1".into(),
            task_id: None,
            unix_ns: t,
            mono_ns: i,
            seq: i as u32,
            mode: "running".into(),
            approved: true,
            rejected_by: vec![],
            from_baseline: false,
            frame_seq: i / 3,
            goal_rad: vec![q; 6],
            goal_gripper: 0.5,
            command_rad: vec![q; 6],
            command_gripper: 0.5,
        };
        b.add(CH_CONTROL, t, &c.encode_to_vec()).unwrap();
        let j = JointStateMsg {
            boot_id: "boot-1".into(),
            task_id: None,
            unix_ns: t,
            mono_ns: i,
            age_ns: 1_000_000,
            positions_rad: vec![0.3; 6],
            velocities_rad_s: vec![0.0; 6],
        };
        b.add(CH_JOINTS, t, &j.encode_to_vec()).unwrap();
    }
    for f in 0..FRAMES {
        let t = t0 + f * 33_000_000 + 1;
        let m = FrameMsg {
            boot_id: "boot-1".into(),
            task_id: None,
            unix_ns: t,
            frame_seq: f,
            capture_mono_ns: f,
            done_mono_ns: f + 9_000_000,
            latency_ms: 9.0,
            late: false,
            unsafe_action: false,
            from_baseline: false,
            ok: true,
            has_image: false,
        };
        b.add(CH_FRAMES, t, &m.encode_to_vec()).unwrap();
    }
    let end = t0 + TICKS * 10_000_000;
    if fault == Fault::LabelContradicts {
        let i = IncidentMsg {
            unit: "m".into(),
            boot_id: "boot-1".into(),
            task_id: None,
            unix_ns: t0 + 100_000_000,
            mono_ns: 0,
            check: "joint_limits".into(),
            failed: vec!["joint_limits".into()],
            value: 3.0,
            limit: 2.9,
            joint: Some(1),
            frame_seq: 3,
            rejected_rad: vec![0.0; 6],
            rejected_gripper: 0.0,
            substituted_rad: vec![0.0; 6],
            substituted_gripper: 0.0,
        };
        b.add(CH_INCIDENTS, i.unix_ns, &i.encode_to_vec()).unwrap();
    }
    let e = EpisodeMsg {
        boot_id: "boot-1".into(),
        kind: String::new(),
        task_id: format!("{robot}-task-{day}"),
        robot_id: robot.into(),
        model_version: "baseline-2".into(),
        start_unix_ns: t0,
        end_unix_ns: end,
        success: true,
        failure_reason: None,
        ticks: TICKS,
        rejects: if fault == Fault::LabelContradicts { 1 } else { 0 },
    };
    b.add(CH_EPISODES, end, &e.encode_to_vec()).unwrap();
    let temp = if fault == Fault::Unhealthy { 96.0 } else { 41.0 };
    let h = HealthMsg {
        unix_ns: end + 1,
        robot_id: robot.into(),
        mode: "running".into(),
        cpu_pct: 30.0,
        link_alive: true,
        motor_temp_c: vec![40.0, temp, 39.0, 38.0, 37.0, 36.0],
        latency_p99_ms: 12.0,
        ..HealthMsg::default()
    };
    b.add(CH_HEALTH, end + 1, &h.encode_to_vec()).unwrap();
    let mut image = jpeg();
    if fault == Fault::CorruptImage {
        // Half a frame, as a camera that drops out mid-transfer delivers it.
        image.truncate(image.len() / 2);
    }
    let img = foxglove::CompressedImage {
        timestamp: Some(foxglove::Timestamp::from_unix_ns(end + 2)),
        frame_id: "camera".into(),
        data: image,
        format: "jpeg".into(),
    };
    b.add(CH_IMAGES, end + 2, &img.encode_to_vec()).unwrap();
    b.cut().unwrap().unwrap().encode(robot, &format!("{robot}-seg-{day}"), seq)
}

fn injected(robot: usize, day: u64) -> Fault {
    match (robot, day) {
        (1, 2) => Fault::OutOfOrder,
        (2, 4) => Fault::OutOfBounds,
        (0, 5) => Fault::LabelContradicts,
        (1, 6) => Fault::Unhealthy,
        (2, 1) => Fault::CorruptImage,
        _ => Fault::None,
    }
}

/// The batch's flag (the catalog's) for a fault.
fn batch_flag(f: Fault) -> Option<&'static str> {
    expected_flag(f).map(|f| f[0])
}

/// The flags of the day's task for a fault.
fn expected_flag(f: Fault) -> Option<&'static [&'static str]> {
    match f {
        Fault::None => None,
        Fault::OutOfOrder => Some(&[quality::TIMESTAMPS]),
        Fault::OutOfBounds => Some(&[quality::BOUNDS, quality::OUTLIER]),
        Fault::LabelContradicts => Some(&[quality::LABEL]),
        Fault::Unhealthy => Some(&[quality::UNHEALTHY]),
        Fault::CorruptImage => Some(&[quality::VIDEO]),
    }
}

/// Rows per (table, partition) in the exported directory, read with the parquet crate.
fn rows_on_disk(dir: &std::path::Path) -> BTreeMap<(String, String), usize> {
    let mut out = BTreeMap::new();
    for table in gantry_sync::lake::TABLES {
        let Ok(dates) = std::fs::read_dir(dir.join(table)) else { continue };
        for date in dates {
            let date = date.unwrap().path();
            for robot in std::fs::read_dir(&date).unwrap() {
                let robot = robot.unwrap().path();
                for file in std::fs::read_dir(&robot).unwrap() {
                    let file = std::fs::File::open(file.unwrap().path()).unwrap();
                    let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
                    let n: usize = reader.map(|b| b.unwrap().num_rows()).sum();
                    let partition = format!(
                        "{}/{}",
                        date.file_name().unwrap().to_string_lossy(),
                        robot.file_name().unwrap().to_string_lossy()
                    );
                    *out.entry((table.to_string(), partition)).or_default() += n;
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_week_is_flagged_exported_and_read_back() {
    let tmp = tempfile::tempdir().unwrap();
    let gantry_tests::LakeCloud { catalog, store, ingest, limits } = gantry_tests::lake_cloud(tmp.path());
    let mut expected = BTreeMap::new();
    for r in 0..ROBOTS {
        let robot = format!("robot-{r}");
        for day in 0..DAYS {
            let fault = injected(r, day);
            let seq = day + 1;
            ingest.handle(&format!("gantry/{robot}/logs"), &day_batch(&robot, day, seq, fault)).await.unwrap();
            expected.insert((robot.clone(), seq), batch_flag(fault));
        }
    }
    assert_eq!(ingest.stats.stored.load(std::sync::atomic::Ordering::Relaxed), (ROBOTS as u64) * DAYS);

    // Each batch carries exactly the flag of what was spoiled in it, and clean ones none.
    let stored = catalog.segments_since(0, 1000).unwrap();
    for s in &stored {
        let want: Vec<String> = expected[&(s.robot_id.clone(), s.seq)].into_iter().map(String::from).collect();
        assert_eq!(s.flags, want, "{} day {}", s.robot_id, s.seq - 1);
    }

    let out = tmp.path().join("lake");
    std::fs::create_dir_all(&out).unwrap();
    let dest = object_store::local::LocalFileSystem::new_with_prefix(&out).unwrap();
    // Kept beside the export, as `gantry-sync lake export --out DIR` does.
    let state_file = out.join("_gantry_lake.sqlite");
    let state = LakeState::open(Some(&state_file)).unwrap();
    let exporter = Exporter {
        catalog: &*catalog,
        source: &*store,
        dest: &dest,
        root: ObjectPath::default(),
        state: &state,
        limits,
    };
    let files = exporter.run().await.unwrap();
    assert!(!files.is_empty());
    let rows = rows_on_disk(&out);
    for r in 0..ROBOTS {
        for day in 0..DAYS {
            let date = format!("date=2026-11-{:02}/robot=robot-{r}", 16 + day);
            let count = |t: &str| rows.get(&(t.to_string(), date.clone())).copied().unwrap_or(0);
            assert_eq!(count("actions"), TICKS as usize, "{date}");
            assert_eq!(count("observations"), TICKS as usize, "{date}");
            assert_eq!(count("frames"), FRAMES as usize, "{date}");
            assert_eq!(count("tasks"), 1, "{date}");
            assert_eq!(count("health"), 1, "{date}");
            let incidents = usize::from(injected(r, day) == Fault::LabelContradicts);
            assert_eq!(count("incidents"), incidents, "{date}");
        }
    }
    // The flags travel with the rows: each spoiled day's task carries the
    // flags of what happened inside it (or, for damage that cannot be pinned
    // on a row, in its batch), the clean ones none.
    let mut flagged = read_flags(&out, "tasks");
    flagged.sort();
    let mut want: Vec<(String, Vec<String>)> = (0..ROBOTS)
        .flat_map(|r| (0..DAYS).map(move |d| (r, d)))
        .filter_map(|(r, d)| {
            let mut f: Vec<String> = expected_flag(injected(r, d))?.iter().map(|s| s.to_string()).collect();
            f.sort();
            Some((format!("robot-{r}"), f))
        })
        .collect();
    want.sort();
    assert_eq!(flagged, want);
    // Actions: the out-of-bounds tick says so, alone; the goal's jump there
    // and back makes it and the next tick outliers.
    let actions = read_flags(&out, "actions");
    let count = |flag: &str| actions.iter().filter(|(_, f)| f.iter().any(|x| x == flag)).count();
    assert_eq!(count(quality::BOUNDS), 1, "{actions:?}");
    assert_eq!(count(quality::OUTLIER), 2, "{actions:?}");
    assert_eq!(count(quality::TIMESTAMPS), 1, "the tick logged before its predecessor: {actions:?}");
    assert_eq!(actions.len(), 3, "no other action is flagged: {actions:?}");
    // Frames: their capture time and the recording segment they were in.
    for file in walk(&out.join("frames")) {
        use arrow_array::cast::AsArray;
        use arrow_array::types::TimestampMicrosecondType;
        let reader =
            ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&file).unwrap()).unwrap().build().unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let robot = batch.column_by_name("robot_id").unwrap().as_string::<i32>().clone();
            let time = batch.column_by_name("time").unwrap().as_primitive::<TimestampMicrosecondType>().clone();
            let capture =
                batch.column_by_name("capture_time").unwrap().as_primitive::<TimestampMicrosecondType>().clone();
            let segment = batch.column_by_name("recording_id").unwrap().as_string::<i32>().clone();
            for i in 0..batch.num_rows() {
                assert_eq!(capture.value(i), time.value(i) - 9_000, "capture = done - latency, in µs");
                let day = (time.value(i) as u64 * 1000 - WEEK_START) / DAY_NS;
                assert_eq!(segment.value(i), format!("{}-seg-{day}", robot.value(i)));
            }
        }
    }

    // The operator's figures.
    let a = state.analytics().unwrap();
    let robots = a["success_rate_by_robot"].as_array().unwrap();
    assert_eq!(robots.len(), ROBOTS);
    assert!(robots.iter().all(|r| r["episodes"] == DAYS && r["success_rate"] == 1.0), "{a:#}");
    assert_eq!(a["success_rate_by_task"].as_array().unwrap().len(), ROBOTS, "task = id without its number: {a:#}");
    assert_eq!(a["incidents_by_check"], serde_json::json!([{"check": "joint_limits", "incidents": 1}]));
    let frames: u64 = a["latency_trend"].as_array().unwrap().iter().map(|h| h["frames"].as_u64().unwrap()).sum();
    assert_eq!(frames, ROBOTS as u64 * DAYS * FRAMES);

    // Re-running adds nothing, also from a fresh process (the state reopened);
    // a new batch adds only its rows.
    assert!(exporter.run().await.unwrap().is_empty(), "idempotent");
    let reopened = LakeState::open(Some(&state_file)).unwrap();
    let again = Exporter { state: &reopened, ..exporter };
    assert!(again.run().await.unwrap().is_empty(), "idempotent across runs");
    let exporter = again;
    let before: usize = rows_on_disk(&out).values().sum();
    ingest.handle("gantry/robot-0/logs", &day_batch("robot-0", 6, 100, Fault::None)).await.unwrap();
    let new = exporter.run().await.unwrap();
    let added: u64 = new.iter().map(|f| f.rows).sum();
    assert_eq!(added, 2 * TICKS + FRAMES + 1 + 1);
    let after = rows_on_disk(&out);
    assert_eq!(after.values().sum::<usize>(), before + added as usize);

    // Compaction: robot-0's last day now has two files per table; merged
    // into one each, with every row kept and the merged files gone.
    let files_in = |t: &str| walk(&out.join(t).join(format!("date={}", day_date(6))).join("robot=robot-0")).len();
    assert_eq!(files_in("actions"), 2);
    let merged = exporter.compact("9999-12-31").await.unwrap();
    assert_eq!(merged.len(), new.len(), "one merged file per table the new batch touched: {merged:?}");
    assert!(merged.iter().all(|f| f.replaces.len() == 2
        && f.schema_version == gantry_sync::lake::schema::SCHEMA_VERSION
        && f.sha256.len() == 64));
    assert_eq!(files_in("actions"), 1);
    assert_eq!(rows_on_disk(&out), after, "compaction keeps every row");
    assert!(exporter.compact("9999-12-31").await.unwrap().is_empty(), "nothing left to merge");
    let listed = state.files_since(0, 10_000).unwrap();
    let live: u64 = listed.iter().filter(|f| f.superseded_by.is_none()).map(|f| f.rows).sum();
    assert_eq!(live as usize, after.values().sum::<usize>(), "the file list's live rows are the lake's");
    for f in listed.iter().filter(|f| f.superseded_by.is_none()) {
        let bytes = std::fs::read(out.join(&f.path)).unwrap();
        use sha2::Digest as _;
        let hex: String = sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, f.sha256, "{}", f.path);
    }

    // The review queue, over HTTP as the service serves it, holds the
    // disputed task (and the 1 % sample, by hash); a person's label lands in
    // `labels`, beside the robot's outcome.
    let app: axum::Router =
        gantry_sync::lake::review::router(std::sync::Arc::new(LakeState::open(Some(&state_file)).unwrap()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::new();
    let queue = |state: &'static str| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let r = http.get(format!("{base}/api/review?state={state}")).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<serde_json::Value>().await.unwrap()["tasks"].as_array().unwrap().clone()
        }
    };
    let pending = queue("pending").await;
    let reason = |q: &serde_json::Value| q["reason"].as_str().unwrap().to_string();
    let disputed: Vec<_> = pending.iter().filter(|q| reason(q) == "disputed").collect();
    assert_eq!(disputed.len(), 1, "{pending:?}");
    assert_eq!(
        (disputed[0]["robot_id"].as_str(), disputed[0]["task_id"].as_str()),
        (Some("robot-0"), Some("robot-0-task-5"))
    );
    assert_eq!(disputed[0]["auto_success"], true);
    assert!(disputed[0]["flags"].as_array().unwrap().iter().any(|f| f == quality::LABEL));
    let sampled = pending.iter().filter(|q| reason(q) == "sampled").count();
    let expect_sampled = (0..ROBOTS)
        .flat_map(|r| (0..DAYS).map(move |d| (r, d)))
        .filter(|(r, d)| {
            injected(*r, *d) != Fault::LabelContradicts
                && gantry_sync::lake::review::sampled(&format!("robot-{r}"), "boot-1", &format!("robot-{r}-task-{d}"))
        })
        .count();
    assert_eq!(sampled, expect_sampled, "the 1 % sample is the hash's");
    assert!(queue("labelled").await.is_empty());
    let post = |task: &str, body: serde_json::Value| {
        let req = http.post(format!("{base}/api/review/{task}")).json(&body);
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let bogus = http.get(format!("{base}/api/review?state=maybe")).send().await.unwrap();
    assert_eq!(bogus.status(), 400);
    let label = |l: &str| serde_json::json!({"label": l, "by": "qa-anna", "note": "gripper never closed"});
    assert_eq!(post("no-such-task", label("failure")).await.0, 404);
    let (code, text) = post("robot-0-task-5", label("maybe")).await;
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("success or failure"), "{text}");
    assert_eq!(post("robot-0-task-5", serde_json::json!({"label": "failure", "by": " "})).await.0, 400);
    assert_eq!(post("robot-0-task-5", serde_json::json!({"label": "failure", "by": "x", "colour": 1})).await.0, 400);
    assert!(queue("labelled").await.is_empty(), "refused labels store nothing");
    let (code, text) = post("robot-0-task-5", label("failure")).await;
    assert_eq!(code, 200, "{text}");
    let item: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!((item["label"]["success"].as_bool(), item["label"]["by"].as_str()), (Some(false), Some("qa-anna")));
    assert!(queue("pending").await.iter().all(|q| q["task_id"] != "robot-0-task-5"));
    let labelled = queue("labelled").await;
    assert_eq!(labelled.len(), 1);
    assert_eq!(labelled[0]["task_id"], "robot-0-task-5");
    server.abort();
    let new = exporter.run().await.unwrap();
    assert_eq!(new.iter().map(|f| (f.table.as_str(), f.rows)).collect::<Vec<_>>(), [("labels", 1)]);
    let file = std::fs::File::open(out.join(&new[0].path)).unwrap();
    let batch = ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap().next().unwrap().unwrap();
    use arrow_array::cast::AsArray;
    let col = |n: &str| batch.column_by_name(n).unwrap().as_boolean().value(0);
    assert_eq!((col("human_success"), col("auto_success")), (false, true), "the person's label beside the robot's");

    // Every table reads back in DuckDB, polars and Spark with no options but
    // Hive partitioning, with exactly the rows the file list says.
    readers_agree(&out);
}

fn day_date(day: u64) -> String {
    gantry_sync::lake::rows::date_of(WEEK_START + day * DAY_NS)
}

/// Runs `scripts/check-lake.py` (DuckDB, polars, Spark) on an export.
fn readers_agree(dir: &std::path::Path) {
    let python = gantry_tests::lake_python();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/check-lake.py");
    let out = std::process::Command::new(python).arg(script).arg(dir).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "check-lake.py failed:\n{text}");
    for engine in ["duckdb", "polars", "spark"] {
        assert!(text.contains(&format!("{engine}: every table matches")), "{engine} did not confirm:\n{text}");
    }
}

/// (robot, flags) of every row of `table` whose flags are not empty.
fn read_flags(dir: &std::path::Path, table: &str) -> Vec<(String, Vec<String>)> {
    use arrow_array::cast::AsArray;
    let mut out = Vec::new();
    for entry in walk(&dir.join(table)) {
        let reader =
            ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(entry).unwrap()).unwrap().build().unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let robots = batch.column_by_name("robot_id").unwrap().as_string::<i32>().clone();
            let flags = batch.column_by_name("flags").unwrap().as_list::<i32>().clone();
            for i in 0..batch.num_rows() {
                let f = flags.value(i);
                let f: Vec<String> = f.as_string::<i32>().iter().map(|s| s.unwrap().to_string()).collect();
                if !f.is_empty() {
                    out.push((robots.value(i).to_string(), f));
                }
            }
        }
    }
    out
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
