//! The embedded broker: rumqttd on a private loopback port, reachable by robots
//! only through the authorising front (`front.rs`) on `broker.listen`. The
//! broker admits two identities: connections the front vouches for (its secret
//! as password, the robot id as user and client id) and cloud sync's own
//! ingestion client.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

/// The ingestion client's user name on the embedded broker.
pub const SERVICE_USER: &str = "gantry-sync";

pub struct Embedded {
    /// Where the broker itself listens (loopback, private).
    pub internal: SocketAddr,
    /// Password the front rewrites robots' CONNECTs with.
    pub front_secret: String,
    /// The ingestion client's password.
    pub service_secret: String,
}

fn random_secret() -> anyhow::Result<String> {
    let mut b = [0u8; 24];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("no randomness for the broker secrets: {e}"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Starts rumqttd on its own threads (it runs until the process exits).
pub fn start(max_payload: usize) -> anyhow::Result<Embedded> {
    // rumqttd binds the address it is given; take a free port from the OS first.
    let internal = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let front_secret = random_secret()?;
    let service_secret = random_secret()?;
    let (front, service) = (front_secret.clone(), service_secret.clone());
    let auth: rumqttd::AuthHandler = Arc::new(move |client_id: String, user: String, pass: String| {
        (user == SERVICE_USER && pass == service) || (pass == front && user == client_id)
    });
    let connections = ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: max_payload + 64 * 1024,
        max_inflight_count: 500,
        auth: None,
        external_auth: Some(auth),
        dynamic_filters: true,
    };
    let server = ServerSettings {
        name: "gantry-internal".into(),
        listen: internal,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: 20_000,
            max_outgoing_packet_count: 500,
            max_segment_size: 64 * 1024 * 1024,
            max_segment_count: 10,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([("internal".to_string(), server)])),
        ..Config::default()
    };
    let mut broker = Broker::new(config);
    std::thread::Builder::new()
        .name("rumqttd".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded broker stopped");
            }
        })
        .context("starting the embedded broker")?;
    Ok(Embedded { internal, front_secret, service_secret })
}
