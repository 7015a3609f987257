//! Cloud sync on external services. An external Mosquitto over TLS, with
//! passwords and an ACL configured here: the robot's batches arrive through
//! `mqtts://` (the robot trusting the test's CA from its credentials file,
//! cloud sync from `broker.ca_path`), a client without the CA, without a
//! password or outside its ACL gets nothing through, and `check-config` names
//! a missing CA file. A PostgreSQL catalog (Debian's server, started here)
//! answers every catalog call as the embedded SQLite one does.

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
        object_key: format!("logs/robot={robot}/{seq}.mcap"),
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
