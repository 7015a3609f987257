//! Training samples across two boots of one robot, end to end through the
//! cloud: the robot's recorder runs twice (a restart: frame numbers start
//! again at 0), its log batches are ingested as the broker delivers them,
//! its segments arrive as bulk uploads, and the lake export turns them into
//! `tasks`, `samples` and `images`. Joined on their keys, samples ↔ images ↔
//! tasks give exactly one row per sample in DuckDB and in Spark (and a join
//! on the frame number alone would not), and every frame that says it has a
//! camera image names one that is there; `scripts/samples.py` yields each
//! usable sample as numpy arrays with its task's outcome.

use std::collections::HashSet;

use gantry_config::wire::{self, BatchKind};
use gantry_edge::record::catalog::Catalog;
use gantry_edge::record::Recorder;
use gantry_sync::lake::{Exporter, LakeState};
use gantry_sync::store::{object_key, UploadedSegment};
use gantry_tests::recording;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore as _;

const ROBOT: &str = "robot-s";

fn run_script(script: &str, arg: &std::path::Path) -> String {
    let path = format!("{}/../scripts/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(gantry_tests::lake_python()).arg(path).arg(arg).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{script} failed:\n{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_join_their_images_and_tasks_across_two_boots() {
    let tmp = tempfile::tempdir().unwrap();
    let robot_dir = tmp.path().join("robot");
    let mut boots = Vec::new();
    let mut t0 = gantry_hal::clock::monotonic_ns();
    for boot in 0..2 {
        let (mut rec, _) = Recorder::open(recording::settings(&robot_dir, ROBOT)).unwrap();
        let taps = recording::taps();
        let frames = recording::run(&mut rec, &taps, t0, &format!("task-{boot}"));
        assert!(frames > 80);
        boots.push(rec.stats());
        rec.close();
        t0 += 10_000_000_000;
    }

    // The cloud: the robot's batches through ingestion, its segments as uploads.
    let gantry_tests::LakeCloud { catalog, store, ingest, limits } = gantry_tests::lake_cloud(tmp.path());
    let robot_catalog = Catalog::open(&robot_dir.join("catalog.sqlite")).unwrap();
    let batches = robot_catalog.outbox_next(&HashSet::new(), 10_000).unwrap();
    assert!(!batches.is_empty());
    for (_, kind, payload) in &batches {
        let leaf = match kind {
            0 => BatchKind::Incidents,
            1 => BatchKind::Health,
            _ => BatchKind::Logs,
        }
        .topic_leaf();
        ingest.handle(&wire::topic(ROBOT, leaf), payload).await.unwrap();
    }
    let segments = robot_catalog.all().unwrap();
    assert_eq!(segments.len(), 2, "one segment per boot");
    for seg in &segments {
        let bytes = std::fs::read(seg.path(&robot_dir)).unwrap();
        let key = object_key(&ObjectPath::default(), "segments", ROBOT, seg.start_unix_ns, &seg.id);
        store.put(&key, bytes.into()).await.unwrap();
        catalog
            .insert_upload(&UploadedSegment {
                robot_id: ROBOT.into(),
                segment_id: seg.id.clone(),
                object_key: key.to_string(),
                bytes: seg.bytes,
                sha256: seg.sha256.clone(),
                messages: seg.messages,
                start_unix_ns: seg.start_unix_ns,
                end_unix_ns: seg.end_unix_ns,
                received_unix_ns: seg.end_unix_ns,
                flags: Vec::new(),
            })
            .unwrap();
    }

    let out = tmp.path().join("lake");
    std::fs::create_dir_all(&out).unwrap();
    let dest = object_store::local::LocalFileSystem::new_with_prefix(&out).unwrap();
    let state = LakeState::open(Some(&out.join("_gantry_lake.sqlite"))).unwrap();
    let exporter = Exporter {
        catalog: &*catalog,
        source: &*store,
        dest: &dest,
        root: ObjectPath::default(),
        state: &state,
        limits,
    };
    let files = exporter.run().await.unwrap();
    let rows = |table: &str| files.iter().filter(|f| f.table == table).map(|f| f.rows).sum::<u64>();
    let written: u64 = boots.iter().map(|s| s.samples.load(std::sync::atomic::Ordering::Relaxed)).sum();
    let images: u64 = boots.iter().map(|s| s.images.load(std::sync::atomic::Ordering::Relaxed)).sum();
    assert!(images > 2, "{images} camera images");
    assert_eq!(rows("samples"), written, "every sample the recorder wrote");
    assert_eq!(rows("tasks"), 2);
    // Camera images, and one model RGB and one depth image per sample.
    assert!(rows("images") >= 2 * written + 2, "{} images for {written} samples", rows("images"));
    assert!(exporter.run().await.unwrap().is_empty(), "a second run adds nothing");

    // The readers, and the join keyed by boot, in DuckDB and Spark.
    let checked = run_script("check-lake.py", &out);
    for engine in ["duckdb", "polars", "spark"] {
        assert!(checked.contains(&format!("{engine}: every table matches")), "{checked}");
    }
    for engine in ["duckdb", "spark"] {
        let want =
            format!("{engine}: samples ⋈ images ⋈ tasks: {written} rows for {written} samples: one row per sample");
        assert!(checked.contains(&want), "{checked}");
        // Every camera image the robot kept is named by its frame's row.
        let want = format!(
            "{engine}: frames ⋈ images: {images} rows for {images} frames with an image: every reference resolves"
        );
        assert!(checked.contains(&want), "{checked}");
    }
    // Both boots numbered their frames from 0: the frame number alone
    // matches each sample to more than one image.
    let naive = std::process::Command::new(gantry_tests::lake_python())
        .arg("-c")
        .arg(format!(
            "import duckdb; print(duckdb.sql(\"SELECT count(*) FROM read_parquet('{0}/samples/*/*/*.parquet') s \
             JOIN read_parquet('{0}/images/*/*/*.parquet') i ON i.frame_seq = s.frame_seq AND i.kind = 'model_rgb'\").fetchone()[0])",
            out.display()
        ))
        .output()
        .unwrap();
    let naive: u64 = String::from_utf8_lossy(&naive.stdout).trim().parse().unwrap();
    assert!(naive > written, "a join on frame_seq alone gives {naive} rows for {written} samples");

    // The training-set example: every sample with a command, as arrays.
    let summary = run_script("samples.py", &out);
    let usable = written
        - boots.iter().map(|s| s.samples_without_command.load(std::sync::atomic::Ordering::Relaxed)).sum::<u64>();
    assert!(
        summary.starts_with(&format!("{usable} samples, ")) && summary.contains("((24, 32, 3), (12, 16), (12,), (7,))"),
        "{summary}"
    );
}
