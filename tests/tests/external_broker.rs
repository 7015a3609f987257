//! Cloud sync on external services. An external Mosquitto over TLS, with
//! passwords and an ACL configured here: the robot's batches arrive through
//! `mqtts://` (the robot trusting the test's CA from its credentials file,
//! cloud sync from `broker.ca_path`), a client without the CA, without a
//! password or outside its ACL gets nothing through, and `check-config` names
//! a missing CA file. A PostgreSQL catalog (Debian's server, started here)
//! answers every catalog call as the embedded SQLite one does. Two replicas
//! on that PostgreSQL, one Mosquitto (shared subscriptions) and an S3 API
//! (moto): one is SIGKILLed while ten robots stream, and every batch is
//! stored once, none lost.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use gantry_config::cloud::BrokerMode;
use gantry_config::wire;
use gantry_edge::daemon::Daemon;
use gantry_edge::pipeline::Options;
use gantry_sync::Service;
use gantry_tests::{cloud_config, free_port, robot_config, wait_for, Mosquitto};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS, TlsConfiguration, Transport};

/// A CA and a server certificate for 127.0.0.1 signed by it, as PEM.
fn pki() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "gantry test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.subject_alt_names.push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

/// A raw client's CONNACK over TLS with `ca`: `Ok` when let in.
async fn tls_connect(port: u16, id: &str, login: Option<(&str, &str)>, ca: &[u8]) -> Result<AsyncClient, String> {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    if let Some((u, p)) = login {
        o.set_credentials(u, p);
    }
    o.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
        ca: ca.to_vec(),
        alpn: None,
        client_auth: None,
    }));
    let (client, mut events) = AsyncClient::new(o, 16);
    let result = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => return Ok(()),
                Ok(_) => continue,
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await
    .map_err(|_| "timed out".to_string())?;
    // Keep the connection served while the caller uses the client.
    tokio::spawn(async move { while events.poll().await.is_ok() {} });
    result.map(|()| client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_over_tls_with_passwords_and_an_acl() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (ca, cert, key) = pki();
    for (name, pem) in [("ca.pem", &ca), ("server.pem", &cert), ("server.key", &key)] {
        std::fs::write(dir.join(name), pem).unwrap();
    }
    let passwd = dir.join("passwd");
    std::fs::write(&passwd, "").unwrap();
    for (user, pass) in [("gantry-sync", "cloud-pw"), ("robot-1", "robot-pw")] {
        let ok =
            std::process::Command::new("mosquitto_passwd").arg("-b").arg(&passwd).arg(user).arg(pass).status().unwrap();
        assert!(ok.success());
    }
    std::fs::write(dir.join("acl"), "user gantry-sync\ntopic readwrite gantry/#\n\npattern readwrite gantry/%u/#\n")
        .unwrap();
    let port = free_port();
    let conf = format!(
        "listener {port} 127.0.0.1\ncafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n\
         allow_anonymous false\npassword_file {d}/passwd\nacl_file {d}/acl\n",
        d = dir.display()
    );
    let _mosquitto = Mosquitto::start_with(port, &conf).unwrap();

    // Cloud sync, trusting the test's CA.
    let mut config = cloud_config(&dir.join("cloud"), "127.0.0.1:0");
    config.broker.mode = BrokerMode::External;
    config.broker.url = format!("mqtts://gantry-sync:cloud-pw@127.0.0.1:{port}");
    config.broker.ca_path = dir.join("ca.pem").display().to_string();
    let cloud = Service::start(&config).await.unwrap();
    let ingest = cloud.ingest.clone();
    wait_for("ingestion subscribed over TLS", Duration::from_secs(20), || ingest.subscribed.load(Relaxed)).await;

    // The robot, from its credentials file.
    let creds = dir.join("robot-creds.toml");
    std::fs::write(
        &creds,
        format!("username = \"robot-1\"\npassword = \"robot-pw\"\nca_path = \"{}\"\n", dir.join("ca.pem").display()),
    )
    .unwrap();
    let mut robot_cfg = robot_config("robot-1", &dir.join("robot"), &format!("mqtts://127.0.0.1:{port}"));
    robot_cfg.uplink.credentials_path = creds.display().to_string();
    let robot = Daemon::start(&robot_cfg, gantry_hal::Pacing::RealTime, Options::default()).await.unwrap();
    wait_for("the robot's batches stored", Duration::from_secs(30), || {
        cloud.catalog.robot_seqs("robot-1").is_ok_and(|s| s.len() >= 3)
    })
    .await;
    assert_eq!(ingest.rejected(), 0);

    // Without the CA, without a password, or with a wrong one: not let in.
    let ca_pem = ca.as_bytes();
    let (other_ca, _, _) = pki();
    assert!(tls_connect(port, "robot-1x", Some(("robot-1", "robot-pw")), other_ca.as_bytes()).await.is_err());
    assert!(tls_connect(port, "anon", None, ca_pem).await.is_err());
    assert!(tls_connect(port, "robot-1y", Some(("robot-1", "wrong")), ca_pem).await.is_err());

    // Let in, robot-1 may not publish as robot-2: Mosquitto drops it, while
    // robot-1's own batches keep arriving.
    let intruder = tls_connect(port, "robot-1z", Some(("robot-1", "robot-pw")), ca_pem).await.unwrap();
    intruder.publish(wire::topic("robot-2", wire::LOGS), QoS::AtLeastOnce, false, batch("robot-2", 1)).await.unwrap();
    let now = cloud.catalog.robot_seqs("robot-1").unwrap().len();
    wait_for("robot-1's next batches", Duration::from_secs(30), || {
        cloud.catalog.robot_seqs("robot-1").is_ok_and(|s| s.len() >= now + 2)
    })
    .await;
    assert!(cloud.catalog.robot_seqs("robot-2").unwrap().is_empty(), "outside robot-1's ACL");
    assert_eq!(ingest.rejected(), 0);
    robot.stop().await;
    cloud.stop().await;
}

/// A valid log batch of `robot`.
fn batch(robot: &str, seq: u64) -> Vec<u8> {
    let mut b = gantry_edge::record::batch::Batcher::new(wire::BatchKind::Logs, 64_000, Duration::from_secs(5));
    let msg = prost::Message::encode_to_vec(&gantry_config::records::ControlMsg { seq: 1, ..Default::default() });
    b.add(gantry_edge::record::CH_CONTROL, 1_700_000_000_000_000_000, &msg).unwrap();
    b.cut().unwrap().unwrap().encode(robot, "seg-1", seq)
}

/// The same calls, in the same order, on SQLite and on PostgreSQL: the same
/// answers (new, duplicate and conflicting batches, paging, robots, uploads).
#[test]
fn the_postgres_catalog_answers_as_the_sqlite_one() {
    use gantry_sync::store::{CloudCatalog, SqliteCatalog, Stored, StoredSegment, UploadedSegment};
    let pg = gantry_tests::Postgres::start().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let sqlite = SqliteCatalog::open(&tmp.path().join("catalog.sqlite")).unwrap();
    let postgres = gantry_sync::pg::PgCatalog::connect(&pg.url).unwrap();
    // A second connection (a second replica) finds the tables made.
    let replica = gantry_sync::pg::PgCatalog::connect(&pg.url).unwrap();
    let segment = |robot: &str, seq: u64, sha: &str| StoredSegment {
        cursor: 0,
        id: format!("{robot}-{seq:012}"),
        robot_id: robot.into(),
        seq,
        kind: "logs".into(),
        edge_segment_id: "boot-1/seg-1".into(),
        object_key: format!("logs/date=2026-12-05/run-{robot}.batches"),
        object_offset: seq * 1_000,
        bytes: 100 + seq,
        sha256: sha.into(),
        messages: seq * 3,
        start_unix_ns: seq * 1_000,
        end_unix_ns: seq * 1_000 + 999,
        received_unix_ns: 1_700_000_000_000_000_000 + seq,
        flags: if seq == 2 { vec!["rejected".into()] } else { vec![] },
    };
    let upload = |robot: &str, id: &str| UploadedSegment {
        robot_id: robot.into(),
        segment_id: id.into(),
        object_key: format!("segments/{id}.mcap"),
        bytes: 5_000,
        sha256: "ab".repeat(32),
        messages: 40,
        start_unix_ns: 10,
        end_unix_ns: 20,
        received_unix_ns: 30,
        flags: vec!["blurred".into()],
    };
    let mut answers = Vec::new();
    for c in [&sqlite as &dyn CloudCatalog, &postgres] {
        let run = vec![segment("r1", 1, "a1"), segment("r1", 2, "a2"), segment("r2", 1, "b1")];
        let first = c.insert_segments(&run).unwrap();
        assert_eq!(first, vec![Stored::New; 3]);
        let again =
            c.insert_segments(&[segment("r1", 2, "a2"), segment("r1", 1, "forged"), segment("r1", 3, "a3")]).unwrap();
        assert_eq!(again, vec![Stored::Duplicate, Stored::Conflict { stored_sha256: "a1".into() }, Stored::New]);
        c.touch_robot("r1", 5).unwrap();
        c.set_robot_state("r1", "online", Some("v7")).unwrap();
        c.set_robot_state("r1", "online", None).unwrap();
        c.set_robot_health("r2", "running", 12).unwrap();
        c.set_robot_model_report("r2", &serde_json::json!({"version": "v8", "status": "candidate"})).unwrap();
        assert!(c.insert_upload(&upload("r1", "r1/boot/0001")).unwrap());
        assert!(!c.insert_upload(&upload("r1", "r1/boot/0001")).unwrap());
        assert!(c.insert_upload(&upload("r2", "r2/boot/0001")).unwrap());
        let page1 = c.segments_since(0, 2).unwrap();
        let page2 = c.segments_since(page1.last().unwrap().cursor, 10).unwrap();
        let recordings = c.recordings_since(0, 10).unwrap();
        let after_first = c.recordings_since(recordings[0].0, 10).unwrap();
        answers.push(serde_json::json!({
            "pages": [page1.iter().map(|s| (&s.id, &s.sha256, &s.flags)).collect::<Vec<_>>(),
                      page2.iter().map(|s| (&s.id, &s.sha256, &s.flags)).collect::<Vec<_>>()],
            "segment": c.segment("r1-000000000003").unwrap().map(|s| (s.robot_id, s.seq, s.bytes, s.messages, s.end_unix_ns)),
            "missing": c.segment("r9-000000000001").unwrap().is_none(),
            "sha": [c.segment_sha256("r1", 1).unwrap(), c.segment_sha256("r1", 9).unwrap()],
            "seqs": [c.robot_seqs("r1").unwrap(), c.robot_seqs("r2").unwrap()],
            "conflicts": c.conflicts(10).unwrap(),
            "robots": c.robots().unwrap(),
            "upload": c.upload("r1", "r1/boot/0001").unwrap(),
            "uploads": c.uploads("r2").unwrap(),
            "recordings": recordings.iter().map(|(_, u)| &u.segment_id).collect::<Vec<_>>(),
            "after_first": after_first.iter().map(|(_, u)| &u.segment_id).collect::<Vec<_>>(),
            "recording": c.recording("r2/boot/0001").unwrap(),
        }));
    }
    assert_eq!(answers[0], answers[1], "SQLite and PostgreSQL answer alike");
    assert_eq!(answers[1]["seqs"], serde_json::json!([[1, 2, 3], [1]]));
    assert_eq!(answers[1]["robots"][0]["model_version"], "v7");
    assert_eq!(answers[1]["robots"][0]["last_seen_unix_ns"], 1_700_000_000_000_000_003u64);
    // What one replica stored, another sees.
    assert_eq!(replica.robot_seqs("r1").unwrap(), vec![1, 2, 3]);
    assert_eq!(replica.insert_segments(&[segment("r2", 1, "b1")]).unwrap(), vec![Stored::Duplicate]);
}

/// The catalog over TLS (`catalog.ca_path`): against a PostgreSQL that
/// refuses plain connections, the right CA gets in; a plain connection and
/// another CA's trust do not.
#[test]
fn the_postgres_catalog_over_tls_trusts_only_its_ca() {
    use gantry_sync::store::CloudCatalog;
    let (ca, cert, key) = pki();
    let pg = gantry_tests::Postgres::start_tls(&cert, &key).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (ca_path, other_path) = (tmp.path().join("ca.pem"), tmp.path().join("other-ca.pem"));
    std::fs::write(&ca_path, &ca).unwrap();
    std::fs::write(&other_path, pki().0).unwrap();
    let catalog = |ca_path: &std::path::Path| gantry_config::cloud::Catalog {
        url: pg.url.clone(),
        ca_path: ca_path.display().to_string(),
    };

    let over_tls = gantry_sync::pg::PgCatalog::open(&catalog(&ca_path)).unwrap();
    over_tls.touch_robot("r1", 5).unwrap();
    assert_eq!(over_tls.robots().unwrap()[0].robot_id, "r1");
    let plain = gantry_sync::pg::PgCatalog::connect(&pg.url).err().expect("plain TCP is refused");
    assert!(format!("{plain:#}").contains("no encryption"), "{plain:#}");
    let untrusted = gantry_sync::pg::PgCatalog::open(&catalog(&other_path)).err().expect("another CA is not trusted");
    assert!(format!("{untrusted:#}").to_lowercase().contains("certificate"), "{untrusted:#}");
}

/// The lake's state on PostgreSQL answers as on SQLite: the same batches
/// export to the same files, totals and review queue; a person's label on a
/// disputed task and its export; and a second exporter on the same database
/// (the next leader) finds nothing left to export.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lake_state_on_postgres_answers_as_on_sqlite() {
    use gantry_sync::lake::{review::Label, Exporter, LakeState};
    use prost::Message as _;
    let pg = gantry_tests::Postgres::start().unwrap();
    let catalog = std::sync::Arc::new(gantry_sync::pg::PgCatalog::connect(&pg.url).unwrap());
    let gantry_tests::LakeCloud { store, ingest, limits, .. } =
        gantry_tests::lake_cloud_on(catalog.clone(), std::sync::Arc::new(object_store::memory::InMemory::new()));
    for seq in 1..=4u64 {
        let mut batch = lake_batch("r1", seq);
        if seq == 3 {
            // A task the robot called a success although the governor refused a command in it.
            let t0 = 1_700_000_000_000_000_000 + seq * 1_000_000_000;
            let mut b = gantry_edge::record::batch::Batcher::new(wire::BatchKind::Logs, 64_000, Duration::from_secs(5));
            let e = gantry_config::records::EpisodeMsg {
                boot_id: "boot-1".into(),
                task_id: "pick-7".into(),
                kind: "pick".into(),
                robot_id: "r1".into(),
                start_unix_ns: t0,
                end_unix_ns: t0 + 500_000_000,
                success: true,
                rejects: 1,
                ticks: 50,
                ..Default::default()
            };
            b.add(gantry_edge::record::CH_EPISODES, e.end_unix_ns, &e.encode_to_vec()).unwrap();
            batch = b.cut().unwrap().unwrap().encode("r1", "seg-1", seq);
        }
        ingest.handle(&wire::topic("r1", wire::BatchKind::Logs.topic_leaf()), &batch).await.unwrap();
    }
    let export = |state: &LakeState, dest: &object_store::memory::InMemory| {
        let (catalog, store) = (catalog.clone(), store.clone());
        let exporter = Exporter { catalog: &*catalog, source: &*store, dest, root: "lake".into(), state, limits };
        futures::executor::block_on(exporter.run()).unwrap()
    };
    let shape = |files: Vec<gantry_sync::lake::LakeFile>| -> Vec<(String, String, u64, String)> {
        files.into_iter().map(|f| (f.table, f.path, f.rows, f.sha256)).collect()
    };
    let label = Label { success: false, by: "Ana".into(), unix_ns: 9, note: Some("dropped the part".into()) };
    let mut answers = Vec::new();
    for state in [LakeState::open(None).unwrap(), LakeState::on_postgres(catalog.clone()).unwrap()] {
        let dest = object_store::memory::InMemory::new();
        let first = shape(export(&state, &dest));
        let queue = state.review_queue(false, 100).unwrap();
        let labelled = state.label("pick-7", None, None, &label).unwrap();
        let again = state.label("pick-7", Some("r1"), Some("boot-1"), &label).unwrap();
        let second = shape(export(&state, &dest));
        let done = state.review_queue(true, 100).unwrap();
        answers.push(serde_json::json!({
            "first": first, "queue": queue, "labelled": labelled, "again": again, "second": second,
            "done": done, "analytics": rounded(state.analytics().unwrap()), "cursor": state.cursor().unwrap(),
        }));
    }
    assert_eq!(answers[0], answers[1], "SQLite, then PostgreSQL");
    let a = &answers[0];
    assert_eq!(a["queue"].as_array().unwrap().len(), 1, "the disputed task is queued: {a:#}");
    assert_eq!(a["labelled"]["label"]["by"], "Ana");
    assert!(a["second"].as_array().unwrap().iter().any(|f| f[0] == "labels"), "the label is exported: {a:#}");
    // The next leader, on the same database, carries on: nothing is left.
    let next = LakeState::on_postgres(catalog.clone()).unwrap();
    assert!(export(&next, &object_store::memory::InMemory::new()).is_empty());
}

/// A catalog through which one exporter sees only the batches stored before
/// a cut, and which runs another exporter (the other leader) to completion
/// the moment the first has read them: two leaders' exports, overlapping.
struct Overlap<'a> {
    inner: &'a gantry_sync::pg::PgCatalog,
    cut: u64,
    other: Box<dyn Fn() + Send + Sync + 'a>,
    ran: std::sync::atomic::AtomicBool,
}

impl gantry_sync::store::CloudCatalog for Overlap<'_> {
    fn segments_since(&self, cursor: u64, limit: usize) -> anyhow::Result<Vec<gantry_sync::store::StoredSegment>> {
        let rows = self.inner.segments_since(cursor, limit)?;
        if !self.ran.swap(true, Relaxed) {
            (self.other)();
        }
        Ok(rows.into_iter().filter(|r| r.cursor <= self.cut).collect())
    }
    fn segment_sha256(&self, robot: &str, seq: u64) -> anyhow::Result<Option<String>> {
        self.inner.segment_sha256(robot, seq)
    }
    fn insert_segments(
        &self,
        rows: &[gantry_sync::store::StoredSegment],
    ) -> anyhow::Result<Vec<gantry_sync::store::Stored>> {
        self.inner.insert_segments(rows)
    }
    fn conflicts(&self, limit: usize) -> anyhow::Result<Vec<gantry_sync::store::ConflictRow>> {
        self.inner.conflicts(limit)
    }
    fn segment(&self, id: &str) -> anyhow::Result<Option<gantry_sync::store::StoredSegment>> {
        self.inner.segment(id)
    }
    fn robot_seqs(&self, robot: &str) -> anyhow::Result<Vec<u64>> {
        self.inner.robot_seqs(robot)
    }
    fn touch_robot(&self, robot: &str, unix_ns: u64) -> anyhow::Result<()> {
        self.inner.touch_robot(robot, unix_ns)
    }
    fn set_robot_state(&self, robot: &str, state: &str, model_version: Option<&str>) -> anyhow::Result<()> {
        self.inner.set_robot_state(robot, state, model_version)
    }
    fn set_robot_health(&self, robot: &str, mode: &str, backlog: u64) -> anyhow::Result<()> {
        self.inner.set_robot_health(robot, mode, backlog)
    }
    fn set_robot_model_report(&self, robot: &str, report: &serde_json::Value) -> anyhow::Result<()> {
        self.inner.set_robot_model_report(robot, report)
    }
    fn robot_online(&self, robot: &str, unix_ns: u64) -> anyhow::Result<()> {
        self.inner.robot_online(robot, unix_ns)
    }
    fn set_upload_now(&self, robot: &str, until_unix_ns: u64) -> anyhow::Result<bool> {
        self.inner.set_upload_now(robot, until_unix_ns)
    }
    fn robots(&self) -> anyhow::Result<Vec<gantry_sync::store::RobotRow>> {
        self.inner.robots()
    }
    fn upload(&self, robot: &str, segment: &str) -> anyhow::Result<Option<gantry_sync::store::UploadedSegment>> {
        self.inner.upload(robot, segment)
    }
    fn insert_upload(&self, u: &gantry_sync::store::UploadedSegment) -> anyhow::Result<bool> {
        self.inner.insert_upload(u)
    }
    fn uploads(&self, robot: &str) -> anyhow::Result<Vec<gantry_sync::store::UploadedSegment>> {
        self.inner.uploads(robot)
    }
    fn recordings_since(
        &self,
        cursor: u64,
        limit: usize,
    ) -> anyhow::Result<Vec<(u64, gantry_sync::store::UploadedSegment)>> {
        self.inner.recordings_since(cursor, limit)
    }
    fn recording(&self, id: &str) -> anyhow::Result<Option<gantry_sync::store::UploadedSegment>> {
        self.inner.recording(id)
    }
}

/// Two leaders export at once (a failover while the old leader still runs):
/// the one that commits second records nothing and withdraws the files it
/// wrote, so the lake holds each batch's rows once and no stray file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_leaders_exporting_at_once_leave_each_batch_in_the_lake_once() {
    use gantry_sync::lake::{Exporter, LakeState};
    use gantry_sync::store::CloudCatalog;
    let pg = gantry_tests::Postgres::start().unwrap();
    let catalog = std::sync::Arc::new(gantry_sync::pg::PgCatalog::connect(&pg.url).unwrap());
    let gantry_tests::LakeCloud { store, ingest, limits, .. } =
        gantry_tests::lake_cloud_on(catalog.clone(), std::sync::Arc::new(object_store::memory::InMemory::new()));
    for seq in 1..=5u64 {
        ingest.handle(&wire::topic("r1", wire::BatchKind::Logs.topic_leaf()), &lake_batch("r1", seq)).await.unwrap();
    }
    let rows = catalog.segments_since(0, 100).unwrap();
    let lake = object_store::memory::InMemory::new();
    let (first, other) =
        (LakeState::on_postgres(catalog.clone()).unwrap(), LakeState::on_postgres(catalog.clone()).unwrap());
    let overlap = Overlap {
        inner: &catalog,
        // The first leader read the batches before the fifth was stored.
        cut: rows[3].cursor,
        other: Box::new(|| {
            let exporter = Exporter {
                catalog: &*catalog,
                source: &*store,
                dest: &lake,
                root: "lake".into(),
                state: &other,
                limits,
            };
            assert!(!futures::executor::block_on(exporter.run()).unwrap().is_empty(), "the other leader exported");
        }),
        ran: Default::default(),
    };
    let exporter =
        Exporter { catalog: &overlap, source: &*store, dest: &lake, root: "lake".into(), state: &first, limits };
    let lost = exporter.run().await.unwrap_err();
    assert!(format!("{lost:#}").contains("exported the same items first"), "{lost:#}");
    assert!(overlap.ran.load(Relaxed));

    // The lake is the other leader's export alone: every batch once, no stray file.
    assert_eq!(first.cursor().unwrap(), rows.last().unwrap().cursor);
    let recorded: std::collections::BTreeSet<String> =
        first.files_since(0, 1000).unwrap().into_iter().map(|f| f.path).collect();
    let in_lake = objects_under(&lake, "lake").await;
    assert_eq!(in_lake, recorded, "no file of the leader that lost");
    assert!(
        recorded.iter().all(|p| p.ends_with(&format!("part-{:012}-{:012}.parquet", 1, rows.last().unwrap().cursor))),
        "{recorded:?}"
    );
    let once = LakeState::open(None).unwrap();
    let scratch = object_store::memory::InMemory::new();
    Exporter { catalog: &*catalog, source: &*store, dest: &scratch, root: "lake".into(), state: &once, limits }
        .run()
        .await
        .unwrap();
    let rows_of =
        |s: &LakeState| s.files_since(0, 1000).unwrap().iter().map(|f| (f.table.clone(), f.rows)).collect::<Vec<_>>();
    assert_eq!(rows_of(&first), rows_of(&once), "each batch's rows once");
}

/// The statements shared by both engines, on each: values bound as the
/// parameter's type asks (a NULL typed by its other use, a boolean into a
/// BIGINT column), `RETURNING` after an insert and after an ignored one.
#[test]
fn shared_statements_answer_alike_on_both_engines() {
    use gantry_sync::sql::{Db, Val};
    let pg = gantry_tests::Postgres::start().unwrap();
    let sqlite = Db::in_memory().unwrap();
    let postgres = Db::Postgres(std::sync::Arc::new(gantry_sync::pg::PgCatalog::connect(&pg.url).unwrap()));
    let mut answers = Vec::new();
    for (db, serial) in [(sqlite, "INTEGER PRIMARY KEY AUTOINCREMENT"), (postgres, "BIGSERIAL PRIMARY KEY")] {
        let answer = db
            .transaction(move |tx| {
                tx.execute(
                    &format!(
                        "CREATE TABLE shared_t (id {serial}, name TEXT NOT NULL UNIQUE, ok BIGINT NOT NULL, \
                         n BIGINT, x DOUBLE PRECISION)"
                    ),
                    &[],
                )?;
                let mut out = Vec::new();
                for (name, ok, n) in [("a", true, Some(7_u64)), ("b", false, None), ("a", false, Some(1))] {
                    let id = tx.query_one(
                        "INSERT INTO shared_t (name, ok, n, x) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING RETURNING id",
                        &[Val::from(name), Val::from(ok), Val::from(n), Val::from(0.5)],
                    )?;
                    out.push(format!("{:?}", id.map(|r| r.int(0)).transpose()?));
                }
                for who in [Val::Null, Val::from("b")] {
                    let r = tx.query_one(
                        "SELECT CAST(COUNT(*) AS BIGINT), CAST(SUM(CASE WHEN ok <> 0 THEN 1 ELSE 0 END) AS BIGINT), \
                         SUM(x) FROM shared_t WHERE (CAST(?1 AS TEXT) IS NULL OR name = ?1)",
                        &[who],
                    )?;
                    let r = r.unwrap();
                    out.push(format!("{} {} {}", r.int(0)?, r.int(1)?, r.real(2)?));
                }
                let r = tx.query_one("SELECT n, ok FROM shared_t WHERE name = ?1", &[Val::from("b")])?.unwrap();
                out.push(format!("{:?} {}", r.opt_int(0)?, r.bool(1)?));
                Ok(out)
            })
            .unwrap();
        answers.push(answer);
    }
    assert_eq!(answers[0], answers[1], "SQLite, then PostgreSQL");
    assert_eq!(answers[0], ["Some(1)", "Some(2)", "None", "2 1 1", "1 0 0.5", "None false"]);
}

/// The operator's records (model registry, rollout, incident log, alerts and
/// their outbox, A/B verdicts): the same calls on SQLite and on PostgreSQL
/// give the same answers, so every replica sees one registry and one log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_operator_records_answer_as_the_sqlite_ones() {
    use gantry_sync::webhook::Outbox as _;
    let pg = gantry_tests::Postgres::start().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let key = gantry_config::package::generate_signing_key().unwrap();
    let baseline = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../models/baseline"));
    let archives: Vec<Vec<u8>> = ["m-1", "m-2"]
        .iter()
        .map(|version| {
            let dir = tmp.path().join(version);
            std::fs::create_dir_all(&dir).unwrap();
            let manifest = std::fs::read_to_string(baseline.join("manifest.toml")).unwrap();
            let manifest = manifest.replace("version = \"baseline-2\"", &format!("version = \"{version}\""));
            std::fs::write(dir.join("manifest.toml"), manifest).unwrap();
            std::fs::copy(baseline.join("model.onnx"), dir.join("model.onnx")).unwrap();
            gantry_config::package::pack(&dir, &key).unwrap()
        })
        .collect();
    let mut answers = Vec::new();
    for shared in [None, Some(std::sync::Arc::new(gantry_sync::pg::PgCatalog::connect(&pg.url).unwrap()))] {
        let dir = tmp.path().join(if shared.is_some() { "pg" } else { "sqlite" });
        let db = gantry_sync::ops::open_db(&dir, shared).unwrap();
        let store = std::sync::Arc::new(object_store::memory::InMemory::new());
        let registry = gantry_sync::models::Registry::new(db.clone(), store, Default::default());
        let journal = gantry_sync::ops::Journal::new(db);
        let mut a = serde_json::Map::new();
        for archive in &archives {
            registry.publish_archive(archive.clone(), None, serde_json::Value::Null, "first", "op").await.unwrap();
        }
        let again = registry.publish_archive(archives[0].clone(), None, serde_json::Value::Null, "", "op").await;
        a.insert("published_twice".into(), format!("{:#}", again.unwrap_err()).into());
        registry.promote("m-1", "op", "first production").unwrap();
        registry.set_candidate("m-2", 50.0, &[], "op").unwrap();
        a.insert("plan_ab".into(), serde_json::to_value(registry.plan().unwrap()).unwrap());
        let fleet: Vec<String> = (0..10).map(|i| format!("robot-{i}")).collect();
        a.insert("assignments".into(), serde_json::to_value(registry.assignments(&fleet).unwrap()).unwrap());
        registry.clear_candidate("op", "enough").unwrap();
        registry.promote("m-2", "op", "").unwrap();
        a.insert("rolled_back_to".into(), registry.rollback("op").unwrap().into());
        a.insert("plan".into(), serde_json::to_value(registry.plan().unwrap()).unwrap());
        let models: Vec<_> = registry.models().unwrap().into_iter().map(|m| (m.version, m.status, m.sha256)).collect();
        a.insert("models".into(), serde_json::to_value(models).unwrap());

        let firing = gantry_sync::ops::Firing {
            rule: "robot_offline",
            subject: "robot-3",
            robot_id: Some("robot-3"),
            severity: "critical",
            since_unix_ns: 5,
            message: "robot-3 is offline",
            value: Some(61.0),
        };
        let fired = journal.fire(&firing, 10).unwrap().unwrap();
        a.insert("fired_again".into(), journal.fire(&firing, 11).unwrap().is_some().into());
        a.insert("firing".into(), journal.firing().unwrap().len().into());
        a.insert("resolved".into(), journal.resolve(fired.id, 20, "back").unwrap().map(|x| x.state).into());
        a.insert("resolved_again".into(), journal.resolve(fired.id, 21, "back").unwrap().is_some().into());
        a.insert("alerts".into(), serde_json::to_value(journal.alerts(10).unwrap()).unwrap());
        journal.log(30, "task.submitted", "pick-1", "factory", "submitted pick-1", serde_json::json!({"n": 1}));
        let entries: Vec<_> =
            journal.entries(0, 100).unwrap().into_iter().map(|e| (e.id, e.kind, e.subject, e.who, e.message)).collect();
        a.insert("entries".into(), serde_json::to_value(entries).unwrap());
        let test = journal.ab_test("m-2", Some("m-1"), 40).unwrap();
        journal.set_verdict("m-2", "promote", 50).unwrap();
        let decided = journal.ab_test("m-2", Some("m-1"), 60).unwrap();
        a.insert(
            "ab".into(),
            serde_json::json!([test.since_unix_ns, test.verdict, decided.since_unix_ns, decided.verdict]),
        );
        let pending: Vec<String> = journal.pending(10).unwrap().into_iter().map(|e| e.key).collect();
        journal.attempted(&pending[0], Some(70)).unwrap();
        journal.attempted(&pending[1], None).unwrap();
        let left: Vec<(String, u32)> = journal.pending(10).unwrap().into_iter().map(|e| (e.key, e.attempts)).collect();
        a.insert("outbox".into(), serde_json::json!([pending, left]));
        answers.push(serde_json::Value::Object(a));
    }
    assert_eq!(answers[0], answers[1], "SQLite, then PostgreSQL");
    // The answers are the expected ones, not only the same.
    let a = &answers[0];
    assert_eq!(a["plan"]["production"], "m-1");
    assert_eq!(a["plan_ab"]["candidate"], "m-2");
    assert_eq!(a["assignments"].as_array().unwrap().iter().filter(|x| x[1]["version"] == "m-2").count(), 5);
    assert_eq!(a["fired_again"], false);
    assert_eq!(a["resolved"], "resolved");
    assert_eq!(a["ab"], serde_json::json!([40, null, 40, "promote"]));
    assert_eq!(a["outbox"][1], serde_json::json!([["alert-1-resolved", 1]]));
    assert!(a["published_twice"].as_str().unwrap().contains("already published"), "{a:#}");
}

/// A replica's child: cloud sync with the configuration in the file this
/// variable names; prints `ready HTTP_ADDR`.
const REPLICA_ENV: &str = "GANTRY_TEST_REPLICA_CONFIG";

#[test]
fn child_replica() {
    let Ok(path) = std::env::var(REPLICA_ENV) else { return };
    gantry_tests::child::die_with_parent();
    let config: gantry_config::CloudConfig = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let service = Service::start(&config).await.unwrap();
        let stats = service.ingest.clone();
        wait_for("ingestion subscribed", Duration::from_secs(30), || stats.subscribed.load(Relaxed)).await;
        println!("ready {}", service.http_addr);
        std::future::pending::<()>().await;
    });
}

/// The unlabelled figure `name` on a replica's `/metrics`.
async fn metric(http: &str, name: &str) -> u64 {
    let text = reqwest::get(format!("http://{http}/metrics")).await.unwrap().text().await.unwrap();
    let line = text.lines().find(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with(' '))).unwrap();
    line.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64
}

async fn stored_by(http: &str) -> u64 {
    metric(http, "gantry_sync_batches_stored_total").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_postgres_and_s3_one_killed_mid_stream_store_every_batch_once() {
    use gantry_sync::store::CloudCatalog;
    use object_store::ObjectStore;
    const ROBOTS: u64 = 10;
    const BATCHES: u64 = 150;
    let pg = gantry_tests::Postgres::start().unwrap();
    let s3 = gantry_tests::S3Server::start("gantry").await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let _mosquitto = Mosquitto::start_persistent(port, &tmp.path().join("mosquitto")).unwrap();
    let mut replicas = Vec::new();
    for name in ["replica-a", "replica-b"] {
        let dir = tmp.path().join(name);
        let mut c = cloud_config(&dir, "127.0.0.1:0");
        c.broker.mode = BrokerMode::External;
        c.broker.url = format!("mqtt://127.0.0.1:{port}");
        c.broker.client_id = name.into();
        c.catalog.url = pg.url.clone();
        c.storage.object_store_url = "s3://gantry/cloud".into();
        c.lake.export_period_s = 1;
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cloud.toml");
        std::fs::write(&path, toml::to_string(&c).unwrap()).unwrap();
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child_replica", "--nocapture", "--test-threads", "1"])
            .env(REPLICA_ENV, &path)
            .env("RUST_LOG", "warn")
            .envs(s3.env())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let http = gantry_tests::child::wait_ready(&mut child, name);
        replicas.push((child, http));
    }
    let catalog = gantry_sync::pg::PgCatalog::connect(&pg.url).unwrap();
    let total = || (0..ROBOTS).map(|r| catalog.robot_seqs(&format!("robot-{r}")).unwrap().len() as u64).sum::<u64>();

    // An operator's "upload now" for robot-3, given to the replica that will
    // die: an observer of robot-3's retained window sees it opened.
    let windows_seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let observer = {
        let mut o = MqttOptions::new("observer", "127.0.0.1", port);
        o.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut events) = AsyncClient::new(o, 16);
        client.subscribe(wire::topic("robot-3", wire::UPLOAD_WINDOW), QoS::AtLeastOnce).await.unwrap();
        client
            .publish(wire::topic("robot-3", wire::STATUS), QoS::AtLeastOnce, true, r#"{"state":"online"}"#)
            .await
            .unwrap();
        let seen = windows_seen.clone();
        tokio::spawn(async move {
            let _client = client;
            loop {
                if let Ok(Event::Incoming(Incoming::Publish(p))) = events.poll().await {
                    let w: gantry_config::wire::UploadWindow = serde_json::from_slice(&p.payload).unwrap();
                    seen.lock().unwrap().push(w.now_until_unix_ns);
                }
            }
        })
    };
    let http = reqwest::Client::new();
    wait_for("robot-3 known", Duration::from_secs(15), || {
        catalog.robots().unwrap().iter().any(|r| r.robot_id == "robot-3")
    })
    .await;
    let opened: serde_json::Value = http
        .post(format!("http://{}/api/robots/robot-3/upload-now", replicas[0].1))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let until = opened["now_until_unix_ns"].as_u64().unwrap();
    wait_for("robot-3's window opened", Duration::from_secs(15), || windows_seen.lock().unwrap().contains(&until))
        .await;
    // The other replica shows the same window (at its next round, within
    // 5 s): it reads the shared catalog.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let on_b: serde_json::Value =
            http.get(format!("http://{}/api/robots", replicas[1].1)).send().await.unwrap().json().await.unwrap();
        let robot_3 = on_b.as_array().unwrap().iter().find(|r| r["robot_id"] == "robot-3").unwrap().clone();
        if robot_3["upload_window"]["now_until_unix_ns"].as_u64() == Some(until) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "replica-b shows {robot_3:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A real robot beside them: its daemon's uplink, through the kill.
    let daemon_dir = tmp.path().join("robot-d");
    let mut daemon_config = gantry_tests::robot_config("robot-d", &daemon_dir, &format!("mqtt://127.0.0.1:{port}"));
    (daemon_config.camera.width, daemon_config.camera.height) = (320, 240);
    (daemon_config.depth.width, daemon_config.depth.height) = (424, 240);
    // It takes no pick: those are for the robot that comes online later.
    daemon_config.tasks.kinds = vec!["inspect".into()];
    let daemon = gantry_edge::daemon::Daemon::start(&daemon_config, gantry_hal::Pacing::RealTime, Default::default())
        .await
        .unwrap();
    wait_for("the daemon's first batches stored", Duration::from_secs(30), || {
        catalog.robot_seqs("robot-d").unwrap().len() >= 2
    })
    .await;

    // Ten robots, each publishing its batches QoS 1 every 20 ms; a batch is
    // the robot's to forget once the broker acknowledges it.
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let robots: Vec<_> = (0..ROBOTS)
        .map(|r| {
            let acked = acked.clone();
            tokio::spawn(async move {
                let robot = format!("robot-{r}");
                let mut o = MqttOptions::new(&robot, "127.0.0.1", port);
                o.set_max_packet_size(1 << 20, 1 << 20);
                let (client, mut events) = AsyncClient::new(o, 16);
                let publisher = {
                    let (client, robot) = (client.clone(), robot.clone());
                    tokio::spawn(async move {
                        for seq in 1..=BATCHES {
                            let topic = wire::topic(&robot, wire::BatchKind::Logs.topic_leaf());
                            client.publish(topic, QoS::AtLeastOnce, false, lake_batch(&robot, seq)).await.unwrap();
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    })
                };
                let mut mine = 0;
                while mine < BATCHES {
                    if let Ok(Event::Incoming(Incoming::PubAck(_))) = events.poll().await {
                        mine += 1;
                        acked.fetch_add(1, Relaxed);
                    }
                }
                publisher.await.unwrap();
            })
        })
        .collect();

    wait_for("both replicas storing", Duration::from_secs(30), || total() >= ROBOTS * BATCHES / 4).await;
    // A factory task submitted to the replica about to die.
    let submitted = http
        .post(format!("http://{}/api/tasks", replicas[0].1))
        .json(&serde_json::json!({"id": "pick-after-failover", "kind": "pick", "priority": "urgent"}))
        .send()
        .await
        .unwrap();
    assert_eq!(submitted.status(), 201);
    // And an operator's, through the fleet page of the same replica: the
    // incident log records who submitted it.
    let by_form = http
        .post(format!("http://{}/ui/tasks", replicas[0].1))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("operator=Ana&kind=pick&priority=normal")
        .send()
        .await
        .unwrap();
    let page = by_form.text().await.unwrap();
    assert!(page.contains(") is queued."), "the page says the task is queued");
    let (a_before, b_before) = (stored_by(&replicas[0].1).await, stored_by(&replicas[1].1).await);
    assert!(a_before > 0 && b_before > 0, "the broker shares the stream: a {a_before}, b {b_before}");
    // The live replica of the smallest client id leads.
    assert_eq!(
        (metric(&replicas[0].1, "gantry_sync_leader").await, metric(&replicas[1].1, "gantry_sync_leader").await),
        (1, 0)
    );
    // The leader has exported some batches to the lake.
    let lake_files = |http: String| async move {
        let v: serde_json::Value =
            reqwest::get(format!("http://{http}/api/lake/files?limit=1000")).await.unwrap().json().await.unwrap();
        v["files"].as_array().unwrap().len()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while lake_files(replicas[0].1.clone()).await == 0 {
        assert!(std::time::Instant::now() < deadline, "replica-a exported nothing to the lake");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (mut a, _) = replicas.remove(0);
    a.kill().unwrap();
    a.wait().unwrap();
    let at_kill = total();
    assert!(at_kill < ROBOTS * BATCHES, "killed mid-stream");
    let daemon_at_kill = catalog.robot_seqs("robot-d").unwrap().last().copied().unwrap_or(0);

    for r in robots {
        r.await.unwrap();
    }
    assert_eq!(acked.load(Relaxed), ROBOTS * BATCHES, "the broker acknowledged every batch");
    // The survivor takes over the dead replica's session after its beats
    // stop (5 s) and stores what the broker kept for it.
    wait_for("every acknowledged batch stored", Duration::from_secs(60), || total() == ROBOTS * BATCHES).await;
    for r in 0..ROBOTS {
        assert_eq!(catalog.robot_seqs(&format!("robot-{r}")).unwrap(), (1..=BATCHES).collect::<Vec<_>>(), "robot-{r}");
    }
    let rows: Vec<_> =
        catalog.segments_since(0, 10_000).unwrap().into_iter().filter(|r| r.robot_id != "robot-d").collect();
    assert_eq!(rows.len() as u64, ROBOTS * BATCHES, "one row per batch");
    assert!(catalog.conflicts(10).unwrap().is_empty());

    // The bodies are in S3, one object per batch, each the bytes its row names.
    let bucket = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name("gantry")
        .with_endpoint(&s3.endpoint)
        .with_allow_http(true)
        .with_access_key_id("gantry-test")
        .with_secret_access_key("gantry-test")
        .with_region("us-east-1")
        .build()
        .unwrap();
    use futures::TryStreamExt;
    // One object per ingest run, each batch's row naming its range.
    let listed: Vec<_> = bucket.list(Some(&"cloud/logs".into())).try_collect().await.unwrap();
    let objects: std::collections::BTreeSet<&str> = rows.iter().map(|r| r.object_key.as_str()).collect();
    assert!(
        listed.len() >= objects.len() && objects.len() < rows.len(),
        "{} objects for {} rows",
        listed.len(),
        rows.len()
    );
    for row in &rows {
        let body = gantry_sync::store::read_body(&bucket, row).await.unwrap();
        assert_eq!(
            hex(&<sha2::Sha256 as sha2::Digest>::digest(&body)),
            row.sha256,
            "{} at {}",
            row.object_key,
            row.object_offset
        );
    }
    // The API serves a batch as its own MCAP file, out of its run's object.
    let row = &rows[rows.len() / 2];
    let served = http.get(format!("http://{}/api/segments/{}", replicas[0].1, row.id)).send().await.unwrap();
    assert_eq!(served.status(), 200);
    assert_eq!(served.headers()["etag"].to_str().unwrap(), format!("\"{}\"", row.sha256));
    let body = served.bytes().await.unwrap();
    assert_eq!(hex(&<sha2::Sha256 as sha2::Digest>::digest(&body)), row.sha256);
    assert!(body.starts_with(b"\x89MCAP0\r\n"), "a whole MCAP file");
    let missing = http.get(format!("http://{}/api/segments/robot-0-999999999999", replicas[0].1)).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let b_after = stored_by(&replicas[0].1).await;
    assert_eq!(metric(&replicas[0].1, "gantry_sync_leader").await, 1, "the survivor leads");
    // Leading now, the survivor publishes every window again, robot-3's
    // still open: the operator's word outlived the replica it was given to.
    wait_for("robot-3's window published by the survivor", Duration::from_secs(15), || {
        windows_seen.lock().unwrap().iter().filter(|t| **t == until).count() >= 2
    })
    .await;
    let seen = windows_seen.lock().unwrap().clone();
    let opened_at = seen.iter().position(|t| *t == until).unwrap();
    assert!(seen[opened_at..].iter().all(|t| *t == until), "robot-3's window never closed: {seen:?}");
    observer.abort();

    // The survivor serves tasks and upload windows: a robot that comes
    // online now gets its window, and the task submitted to the dead replica
    // is ordered to it.
    let robot = "robot-late";
    let mut o = MqttOptions::new(robot, "127.0.0.1", port);
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = AsyncClient::new(o, 16);
    client.subscribe(wire::topic(robot, wire::UPLOAD_WINDOW), QoS::AtLeastOnce).await.unwrap();
    client.subscribe(wire::topic(robot, gantry_config::task::ORDER), QoS::AtLeastOnce).await.unwrap();
    client.publish(wire::topic(robot, wire::STATUS), QoS::AtLeastOnce, true, r#"{"state":"online"}"#).await.unwrap();
    let idle = serde_json::to_vec(&gantry_config::task::RobotState {
        header: gantry_config::task::Header::new(1, gantry_hal::clock::unix_ns()),
        robot_id: robot.into(),
        order_id: String::new(),
        order_update_id: 0,
        task_id: String::new(),
        phase: gantry_config::task::Phase::Idle,
        progress: 0.0,
        operating_mode: "automatic".into(),
        mode: "running".into(),
        health: "green".into(),
        kinds: vec!["pick".into()],
        errors: vec![],
        results: vec![],
        telemetry: Default::default(),
    })
    .unwrap();
    let (mut window, mut order) = (None, None);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut state_tick = tokio::time::interval(Duration::from_millis(500));
    while window.is_none() || order.is_none() {
        assert!(std::time::Instant::now() < deadline, "window {window:?}, order {order:?}");
        tokio::select! {
            _ = state_tick.tick() => {
                client.publish(wire::topic(robot, gantry_config::task::STATE), QoS::AtLeastOnce, false, idle.clone()).await.unwrap();
            }
            event = events.poll() => {
                if let Ok(Event::Incoming(Incoming::Publish(p))) = event {
                    let body: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
                    if p.topic.ends_with(wire::UPLOAD_WINDOW) {
                        window = Some(body);
                    } else {
                        order = Some(body);
                    }
                }
            }
        }
    }
    assert!(window.unwrap()["end_unix_ns"].as_u64() > Some(0));
    assert_eq!(order.unwrap()["order_id"].as_str().and_then(|o| o.split('#').next()), Some("pick-after-failover"));
    let task: serde_json::Value = http
        .get(format!("http://{}/api/tasks/pick-after-failover", replicas[0].1))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((task["state"].as_str(), task["robot_id"].as_str()), (Some("assigned"), Some(robot)), "{task:#}");

    // The daemon streamed on through the survivor; stopped, each batch it
    // made is stored once or still in its outbox.
    wait_for("the daemon's batches stored after the kill", Duration::from_secs(30), || {
        catalog.robot_seqs("robot-d").unwrap().last().copied().unwrap_or(0) >= daemon_at_kill + 3
    })
    .await;
    daemon.stop().await;
    let (made, queued) = gantry_tests::edge_counters(&daemon_dir);
    let stored_d = catalog.robot_seqs("robot-d").unwrap();
    let stored_set: std::collections::BTreeSet<u64> = stored_d.iter().copied().collect();
    assert_eq!(stored_d.len(), stored_set.len(), "no batch of the daemon stored twice");
    let accounted: std::collections::BTreeSet<u64> = stored_set.union(&queued).copied().collect();
    assert_eq!(accounted, (1..=made).collect(), "every batch the daemon made is stored or queued on it");

    // The lake: the survivor carried on from where the dead leader stopped.
    // Its files hold exactly the rows one export of every batch gives, and
    // the lake's directories hold no file the state does not record.
    let lake = gantry_sync::lake::LakeState::on_postgres(std::sync::Arc::new(
        gantry_sync::pg::PgCatalog::connect(&pg.url).unwrap(),
    ))
    .unwrap();
    let last = catalog.segments_since(0, 100_000).unwrap().iter().map(|r| r.cursor).max().unwrap();
    wait_for("the survivor's lake export caught up", Duration::from_secs(30), || lake.cursor().unwrap() == last).await;
    let live: Vec<_> =
        lake.files_since(0, 100_000).unwrap().into_iter().filter(|f| f.superseded_by.is_none()).collect();
    let once = gantry_sync::lake::LakeState::open(None).unwrap();
    let scratch = object_store::memory::InMemory::new();
    gantry_sync::lake::Exporter {
        catalog: &catalog,
        source: &bucket,
        dest: &scratch,
        root: "lake".into(),
        state: &once,
        limits: (&gantry_config::cloud::Quality::default()).into(),
    }
    .run()
    .await
    .unwrap();
    let rows_by_table = |files: Vec<gantry_sync::lake::LakeFile>| {
        let mut by: std::collections::BTreeMap<String, u64> = Default::default();
        for f in files {
            *by.entry(f.table).or_default() += f.rows;
        }
        by
    };
    let expected = rows_by_table(once.files_since(0, 100_000).unwrap());
    assert!(!expected.is_empty());
    assert_eq!(rows_by_table(live.clone()), expected, "the replicas' lake holds each batch's rows once");
    // Its running totals are one export's too (success rates, incidents,
    // latency; sums of floats added in other runs agree to rounding).
    assert_eq!(rounded(lake.analytics().unwrap()), rounded(once.analytics().unwrap()));
    assert_eq!(lake.review_queue(false, 1000).unwrap(), once.review_queue(false, 1000).unwrap());
    let label = gantry_sync::lake::review::Label { success: true, by: "Ana".into(), unix_ns: 1, note: None };
    assert!(matches!(
        lake.label("no-such-task", None, None, &label),
        Err(gantry_sync::lake::review::LabelError::NotQueued(_))
    ));
    let in_s3 = objects_under(&bucket, "cloud/lake").await;
    let recorded: std::collections::BTreeSet<String> = live.iter().map(|f| f.path.clone()).collect();
    assert_eq!(in_s3, recorded, "no stray lake file");
    // The fleet page's trend and the incident log come from PostgreSQL too:
    // the dead leader's trend samples and its log entries are the survivor's.
    let fleet: serde_json::Value =
        http.get(format!("http://{}/api/fleet", replicas[0].1)).send().await.unwrap().json().await.unwrap();
    assert!(!fleet["trends"].as_array().unwrap().is_empty(), "{:#}", fleet["trends"]);
    let incidents: serde_json::Value =
        http.get(format!("http://{}/api/incidents", replicas[0].1)).send().await.unwrap().json().await.unwrap();
    let entry = incidents["incidents"].as_array().unwrap().iter().find(|e| e["kind"] == "task.submitted");
    assert_eq!(entry.map(|e| e["who"].clone()), Some("Ana (fleet page)".into()), "{incidents:#}");
    println!(
        "the daemon made {made} batches: {} stored ({} after the kill), {} still queued",
        stored_d.len(),
        stored_d.iter().filter(|s| **s > daemon_at_kill).count(),
        queued.len()
    );
    println!(
        "{} batches in {} objects: replica-a stored {a_before} before its SIGKILL at {at_kill} stored; replica-b {b_before} then {b_after}",
        ROBOTS * BATCHES,
        objects.len()
    );
    assert!(b_after >= ROBOTS * BATCHES - at_kill, "the survivor stored everything after the kill: {b_after}");
}

/// A log batch that gives the lake one row (a health snapshot) beside the
/// control records of [`gantry_tests::log_batch`].
fn lake_batch(robot: &str, seq: u64) -> Vec<u8> {
    use gantry_edge::record::{batch::Batcher, CH_CONTROL, CH_HEALTH};
    use prost::Message as _;
    let t0 = 1_700_000_000_000_000_000 + seq * 1_000_000_000;
    let mut b = Batcher::new(wire::BatchKind::Logs, 64_000, Duration::from_secs(5));
    for i in 0..10u64 {
        b.add(CH_CONTROL, t0 + i, br#"{"seq":1}"#).unwrap();
    }
    let h = gantry_config::records::HealthMsg {
        unix_ns: t0 + 10,
        robot_id: robot.into(),
        mode: "running".into(),
        cpu_pct: 30.0,
        link_alive: true,
        ..Default::default()
    };
    b.add(CH_HEALTH, t0 + 10, &h.encode_to_vec()).unwrap();
    b.cut().unwrap().unwrap().encode(robot, "seg-1", seq)
}

/// The objects under `root`, by their paths below it.
async fn objects_under(store: &dyn object_store::ObjectStore, root: &str) -> std::collections::BTreeSet<String> {
    use futures::TryStreamExt;
    let listed: Vec<_> = store.list(Some(&root.into())).try_collect().await.unwrap();
    listed.into_iter().map(|o| o.location.to_string().trim_start_matches(&format!("{root}/")).to_string()).collect()
}

/// `v` with every number that is not an integer rounded to 9 decimals.
fn rounded(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Number(n) if n.is_f64() => serde_json::json!((n.as_f64().unwrap() * 1e9).round() / 1e9),
        Value::Array(a) => Value::Array(a.into_iter().map(rounded).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, rounded(v))).collect()),
        other => other,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The task queue's calls on SQLite and on PostgreSQL: the same answers
/// (idempotent submission, optimistic saves, the change feed, events, outcomes).
#[test]
fn the_postgres_task_catalog_answers_as_the_sqlite_one() {
    use gantry_config::task::Priority;
    use gantry_sync::store::SqliteCatalog;
    use gantry_sync::tasks::{Filter, NewTask, Outcome, TaskCatalog, TaskState};
    let pg = gantry_tests::Postgres::start().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let sqlite = SqliteCatalog::open(&tmp.path().join("catalog.sqlite")).unwrap();
    let postgres = gantry_sync::pg::PgCatalog::connect(&pg.url).unwrap();
    let new = |id: &str, priority| NewTask {
        id: id.into(),
        kind: "pick".into(),
        priority,
        params: serde_json::json!({"bin": 3}),
        not_before_unix_ns: 0,
    };
    let mut answers = Vec::new();
    for c in [&sqlite as &dyn TaskCatalog, &postgres] {
        let (t1, fresh) = c.insert_task(&new("t1", Priority::Normal), 100).unwrap();
        assert!(fresh);
        let (again, fresh) = c.insert_task(&new("t1", Priority::Urgent), 200).unwrap();
        assert!(!fresh && again == t1, "a known id gives the existing task");
        c.insert_task(&new("t2", Priority::Urgent), 300).unwrap();
        let mut t = t1.clone();
        t.state = TaskState::Completed;
        t.robot_id = Some("r1".into());
        t.success = Some(true);
        t.finished_unix_ns = Some(1_000);
        t.progress = 1.0;
        let event = ("t1/completed".to_string(), serde_json::json!({"task": "t1"}));
        assert!(c.save_task(&mut t, std::slice::from_ref(&event), 1_000).unwrap());
        let mut stale = t1.clone();
        stale.state = TaskState::Failed;
        assert!(!c.save_task(&mut stale, &[], 1_100).unwrap(), "a save over a changed task is refused");
        let outcome = Outcome {
            order_id: "o1".into(),
            task_id: "t1".into(),
            robot_id: "r1".into(),
            kind: "pick".into(),
            model_version: "v1".into(),
            success: true,
            reason: String::new(),
            finished_unix_ns: 1_000,
        };
        c.record_outcome(&outcome).unwrap();
        c.record_outcome(&outcome).unwrap();
        let pending = c.pending_events(10).unwrap();
        c.event_attempted("t1/completed", Some(1_200)).unwrap();
        let filter = |state, since| Filter { state, robot: None, since, limit: 10 };
        answers.push(format!(
            "{:?}",
            (
                c.task("t1").unwrap(),
                c.task("nope").unwrap(),
                c.tasks(&filter(None, 0)).unwrap(),
                c.tasks(&filter(Some(TaskState::Queued), 0)).unwrap(),
                c.tasks(&filter(None, t.rev - 1)).unwrap().len(),
                c.open_tasks().unwrap(),
                pending.iter().map(|e| (&e.key, &e.body, e.attempts)).collect::<Vec<_>>(),
                c.pending_events(10).unwrap().len(),
                c.outcome_counts(0).unwrap(),
                c.finished_counts(0).unwrap(),
            )
        ));
    }
    assert_eq!(answers[0], answers[1], "SQLite and PostgreSQL answer alike");
    assert!(answers[1].contains("Completed") && answers[1].contains("attempts: 1"), "{}", answers[1]);
}
