//! Cloud sync and a robot on an external Mosquitto over TLS, with passwords
//! and an ACL configured here: the robot's batches arrive through `mqtts://`
//! (the robot trusting the test's CA from its credentials file, cloud sync
//! from `broker.ca_path`), a client without the CA, without a password or
//! outside its ACL gets nothing through, and `check-config` names a missing
//! CA file.

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
