//! The embedded broker's front door: an MQTT 3.1.1 proxy that authenticates
//! each robot and confines it to its own `gantry/{robot}/` prefix, in front of
//! rumqttd (which checks passwords but has no topic ACLs).
//!
//! - CONNECT: with a credentials file, the username must be a known robot with
//!   the right password and the client id must equal it; without one, the client
//!   id must be a valid robot id. Refused: CONNACK 5 (not authorised), counted.
//!   The CONNECT is re-encoded with the front's own secret, so the broker only
//!   admits connections that came through here.
//! - PUBLISH outside the prefix: dropped and counted; QoS 1 is acknowledged to
//!   the robot (as Mosquitto does) so it does not resend forever; QoS 2 and any
//!   SUBSCRIBE outside the prefix close the connection.
//! - Observers (the file's `[observers]`: operators' tools, dashboards,
//!   `mosquitto_sub`) log in the same way, may subscribe anywhere under
//!   `gantry/` and may publish nothing.
//! - Before its CONNECT a client is a stranger: the CONNECT must arrive whole
//!   within `broker.connect_timeout_ms` and fit in [`MAX_CONNECT_BYTES`]
//!   (checked on its declared length, before anything is allocated), and at
//!   most `broker.max_pending_connects` strangers are served at once; the rest
//!   are closed at once. Each refusal is counted.
//! - Everything else is forwarded packet by packet, both ways.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

#[derive(Debug, Default)]
pub struct FrontStats {
    /// TCP connections accepted.
    pub connections: AtomicU64,
    /// CONNECTs refused for their credentials or will topic.
    pub refused: AtomicU64,
    pub denied_publishes: AtomicU64,
    pub denied_subscribes: AtomicU64,
    pub malformed: AtomicU64,
    /// Connections whose CONNECT did not arrive within the deadline.
    pub connect_timeouts: AtomicU64,
    /// First packets that were not a CONNECT or declared more than [`MAX_CONNECT_BYTES`].
    pub oversize_connects: AtomicU64,
    /// Connections closed because `max_pending_connects` strangers were already connecting.
    pub over_capacity: AtomicU64,
    /// Strangers connecting now.
    pub pending: AtomicU64,
}

/// A CONNECT's limit: client id, credentials and a will fit in far less.
pub const MAX_CONNECT_BYTES: usize = 16 * 1024;

/// What the front allows a connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest packet after the CONNECT.
    pub max_packet: usize,
    pub connect_timeout: std::time::Duration,
    pub max_pending: usize,
}

/// Who logged in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Confined to `gantry/{id}/`.
    Robot,
    /// Subscribes anywhere under `gantry/`, publishes nothing.
    Observer,
}

/// The credentials file: robots' and observers' passwords, plain or `sha256:HEX`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub robots: HashMap<String, String>,
    #[serde(default)]
    pub observers: HashMap<String, String>,
}

/// `None`: no credentials file, any valid robot id may log in as a robot.
#[derive(Debug, Clone, Default)]
pub struct RobotCredentials(pub Option<Credentials>);

impl RobotCredentials {
    /// A TOML file with a `[robots]` table (`robot-id = "password"` or
    /// `"sha256:HEX"`) and optionally an `[observers]` table of the same form.
    pub fn load(path: &str) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        if path.is_empty() {
            return Ok(Self(None));
        }
        let text = std::fs::read_to_string(path).with_context(|| format!("broker.credentials_path: reading {path}"))?;
        let file: Credentials = toml::from_str(&text).with_context(|| format!("broker.credentials_path: {path}"))?;
        for name in file.robots.keys().chain(file.observers.keys()) {
            anyhow::ensure!(
                gantry_config::wire::valid_robot_id(name),
                "broker.credentials_path: {path}: {name:?} is not a valid id (expected letters, digits, '-', '_', '.')"
            );
        }
        if let Some(both) = file.observers.keys().find(|n| file.robots.contains_key(*n)) {
            anyhow::bail!("broker.credentials_path: {path}: {both:?} is both a robot and an observer");
        }
        Ok(Self(Some(file)))
    }

    pub fn admits(&self, client_id: &str, user: Option<&str>, pass: Option<&[u8]>) -> Option<Role> {
        if !gantry_config::wire::valid_robot_id(client_id) {
            return None;
        }
        let Some(file) = &self.0 else { return Some(Role::Robot) };
        let (Some(user), Some(pass)) = (user, pass) else { return None };
        if user != client_id {
            return None;
        }
        let (stored, role) = match (file.robots.get(user), file.observers.get(user)) {
            (Some(s), _) => (s, Role::Robot),
            (None, Some(s)) => (s, Role::Observer),
            (None, None) => return None,
        };
        let ok = match stored.strip_prefix("sha256:") {
            Some(hex) => {
                let digest: String = Sha256::digest(pass).iter().map(|b| format!("{b:02x}")).collect();
                digest.eq_ignore_ascii_case(hex)
            }
            None => stored.as_bytes() == pass,
        };
        ok.then_some(role)
    }

    /// May this client publish to `topic`?
    fn may_publish(role: Role, prefix: &str, topic: &str) -> bool {
        role == Role::Robot && topic.starts_with(prefix)
    }

    fn may_subscribe(role: Role, prefix: &str, filter: &str) -> bool {
        match role {
            Role::Robot => filter.starts_with(prefix),
            Role::Observer => filter.starts_with("gantry/"),
        }
    }
}

/// Serves until `stopped`: accepts robots on `listener` and proxies them to `broker`.
pub async fn serve(
    listener: TcpListener,
    broker: std::net::SocketAddr,
    secret: String,
    creds: RobotCredentials,
    limits: Limits,
    stats: Arc<FrontStats>,
    mut stopped: watch::Receiver<bool>,
) {
    let creds = Arc::new(creds);
    let secret = Arc::new(secret);
    let strangers = Arc::new(tokio::sync::Semaphore::new(limits.max_pending));
    loop {
        let (socket, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "broker front: accept failed");
                    continue;
                }
            },
            _ = stopped.wait_for(|s| *s) => return,
        };
        stats.connections.fetch_add(1, Relaxed);
        let Ok(permit) = strangers.clone().try_acquire_owned() else {
            stats.over_capacity.fetch_add(1, Relaxed);
            tracing::debug!(%peer, "broker front: too many connections before their CONNECT; closed");
            continue;
        };
        let (creds, secret, stats, stopped) = (creds.clone(), secret.clone(), stats.clone(), stopped.clone());
        tokio::spawn(async move {
            if let Err(e) = connection(socket, broker, &secret, &creds, limits, permit, &stats, stopped).await {
                tracing::debug!(%peer, error = %e, "broker front: connection ended");
            }
        });
    }
}

#[allow(clippy::too_many_arguments)]
async fn connection(
    mut client: TcpStream,
    broker: std::net::SocketAddr,
    secret: &str,
    creds: &RobotCredentials,
    limits: Limits,
    stranger: tokio::sync::OwnedSemaphorePermit,
    stats: &FrontStats,
    mut stopped: watch::Receiver<bool>,
) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    stats.pending.fetch_add(1, Relaxed);
    let first = tokio::time::timeout(limits.connect_timeout, read_connect(&mut client)).await;
    stats.pending.fetch_sub(1, Relaxed);
    drop(stranger);
    let first = match first {
        Err(_) => {
            stats.connect_timeouts.fetch_add(1, Relaxed);
            return Ok(());
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
            stats.oversize_connects.fetch_add(1, Relaxed);
            return Ok(());
        }
        Ok(r) => r?,
    };
    let Some(first) = first else { return Ok(()) };
    let max_packet = limits.max_packet;
    let connect = match parse_connect(&first) {
        Ok(c) => c,
        Err(code) => {
            stats.malformed.fetch_add(1, Relaxed);
            client.write_all(&[0x20, 0x02, 0x00, code]).await?;
            return Ok(());
        }
    };
    let prefix = format!("gantry/{}/", connect.client_id);
    let role = creds.admits(&connect.client_id, connect.username.as_deref(), connect.password.as_deref());
    let will_ok = |role| connect.will.as_ref().is_none_or(|w| RobotCredentials::may_publish(role, &prefix, &w.topic));
    let Some(role) = role.filter(|r| will_ok(*r)) else {
        stats.refused.fetch_add(1, Relaxed);
        tracing::warn!(client_id = %connect.client_id, "broker front: refused a connection (credentials or will topic)");
        client.write_all(&[0x20, 0x02, 0x00, 0x05]).await?;
        return Ok(());
    };
    let mut upstream = TcpStream::connect(broker).await?;
    upstream.set_nodelay(true)?;
    upstream.write_all(&encode_connect(&connect, &connect.client_id, secret.as_bytes())).await?;
    let (client_rd, mut client_wr) = client.into_split();
    let (up_rd, mut up_wr) = upstream.into_split();
    // Buffered: a packet is read in a few small pieces (header, length, body).
    let mut client_rd = tokio::io::BufReader::with_capacity(64 * 1024, client_rd);
    let mut up_rd = tokio::io::BufReader::with_capacity(64 * 1024, up_rd);
    let (to_client, mut to_client_rx) = mpsc::channel::<Vec<u8>>(64);
    let writer = tokio::spawn(async move {
        while let Some(p) = to_client_rx.recv().await {
            if client_wr.write_all(&p).await.is_err() {
                break;
            }
        }
    });
    let down = {
        let to_client = to_client.clone();
        tokio::spawn(async move {
            while let Ok(Some(p)) = read_packet(&mut up_rd, usize::MAX).await {
                if to_client.send(p).await.is_err() {
                    break;
                }
            }
        })
    };
    let up = async {
        loop {
            let packet = tokio::select! {
                p = read_packet(&mut client_rd, max_packet) => p,
                _ = stopped.wait_for(|s| *s) => return Ok(()),
            };
            let Some(packet) = packet? else { return Ok(()) };
            match packet[0] >> 4 {
                3 => {
                    let Some((topic, qos, pkid)) = parse_publish(&packet) else {
                        stats.malformed.fetch_add(1, Relaxed);
                        return Ok(());
                    };
                    if !RobotCredentials::may_publish(role, &prefix, &topic) {
                        stats.denied_publishes.fetch_add(1, Relaxed);
                        tracing::warn!(client_id = %connect.client_id, %topic, "broker front: publish outside the robot's prefix dropped");
                        match qos {
                            0 => continue,
                            1 => {
                                let _ = to_client.send(vec![0x40, 0x02, (pkid >> 8) as u8, pkid as u8]).await;
                                continue;
                            }
                            _ => return Ok(()),
                        }
                    }
                }
                8 => {
                    let Some(filters) = parse_subscribe(&packet) else {
                        stats.malformed.fetch_add(1, Relaxed);
                        return Ok(());
                    };
                    if !filters.iter().all(|f| RobotCredentials::may_subscribe(role, &prefix, f)) {
                        stats.denied_subscribes.fetch_add(1, Relaxed);
                        tracing::warn!(client_id = %connect.client_id, ?filters, "broker front: subscription outside the robot's prefix; disconnecting");
                        return Ok(());
                    }
                }
                // A second CONNECT is a protocol violation.
                1 => return Ok(()),
                _ => {}
            }
            up_wr.write_all(&packet).await?;
        }
    };
    let result: std::io::Result<()> = up.await;
    down.abort();
    drop(to_client);
    let _ = writer.await;
    result
}

/// The first packet, which must be a CONNECT within [`MAX_CONNECT_BYTES`]:
/// both checked before its body is read.
async fn read_connect<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<Vec<u8>>> {
    let mut first = [0u8; 1];
    if r.read(&mut first).await? == 0 {
        return Ok(None);
    }
    if first[0] >> 4 != 1 {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "the first packet is not a CONNECT"));
    }
    read_rest(r, first[0], MAX_CONNECT_BYTES).await.map(Some)
}

/// One whole MQTT packet (fixed header included), or `None` at a clean EOF.
pub async fn read_packet<R: AsyncRead + Unpin>(r: &mut R, max: usize) -> std::io::Result<Option<Vec<u8>>> {
    let mut first = [0u8; 1];
    if r.read(&mut first).await? == 0 {
        return Ok(None);
    }
    read_rest(r, first[0], max).await.map(Some)
}

/// The rest of a packet whose first byte was `first`; its declared length is
/// held to `max` before anything is allocated for it.
async fn read_rest<R: AsyncRead + Unpin>(r: &mut R, first: u8, max: usize) -> std::io::Result<Vec<u8>> {
    let mut header = [first, 0, 0, 0, 0];
    let mut head = 1;
    let mut len = 0usize;
    for i in 0..4 {
        let b = r.read_u8().await?;
        header[head] = b;
        head += 1;
        len |= ((b & 0x7f) as usize) << (7 * i);
        if b & 0x80 == 0 {
            break;
        }
        if i == 3 {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed remaining length"));
        }
    }
    if len > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("packet of {len} bytes over the limit"),
        ));
    }
    let mut packet = Vec::with_capacity(head + len);
    packet.extend_from_slice(&header[..head]);
    packet.resize(head + len, 0);
    r.read_exact(&mut packet[head..]).await?;
    Ok(packet)
}

fn body(packet: &[u8]) -> &[u8] {
    let mut i = 1;
    while i < packet.len() && packet[i] & 0x80 != 0 {
        i += 1;
    }
    &packet[(i + 1).min(packet.len())..]
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from(self.u8()?) << 8 | u16::from(self.u8()?))
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()? as usize;
        if self.0.len() < n {
            return None;
        }
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(b)
    }

    fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Will {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Connect {
    pub clean_session: bool,
    pub keep_alive: u16,
    pub client_id: String,
    pub will: Option<Will>,
    pub username: Option<String>,
    pub password: Option<Vec<u8>>,
}

/// Parses a CONNECT; the error is the CONNACK return code to answer with.
pub fn parse_connect(packet: &[u8]) -> Result<Connect, u8> {
    if packet.first().map(|b| b >> 4) != Some(1) {
        return Err(0x02);
    }
    let mut r = Reader(body(packet));
    let name = r.string().ok_or(0x02u8)?;
    let level = r.u8().ok_or(0x02u8)?;
    if name != "MQTT" || level != 4 {
        // Robots speak MQTT 3.1.1; anything else: "unacceptable protocol version".
        return Err(0x01);
    }
    let flags = r.u8().ok_or(0x02u8)?;
    let keep_alive = r.u16().ok_or(0x02u8)?;
    let client_id = r.string().ok_or(0x02u8)?;
    let will = if flags & 0x04 != 0 {
        let topic = r.string().ok_or(0x02u8)?;
        let payload = r.bytes().ok_or(0x02u8)?.to_vec();
        Some(Will { topic, payload, qos: (flags >> 3) & 0x03, retain: flags & 0x20 != 0 })
    } else {
        None
    };
    let username = if flags & 0x80 != 0 { Some(r.string().ok_or(0x02u8)?) } else { None };
    let password = if flags & 0x40 != 0 { Some(r.bytes().ok_or(0x02u8)?.to_vec()) } else { None };
    if client_id.is_empty() {
        return Err(0x02);
    }
    Ok(Connect { clean_session: flags & 0x02 != 0, keep_alive, client_id, will, username, password })
}

pub fn encode_connect(c: &Connect, username: &str, password: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    let put = |v: &mut Vec<u8>, b: &[u8]| {
        v.extend_from_slice(&(b.len() as u16).to_be_bytes());
        v.extend_from_slice(b);
    };
    put(&mut v, b"MQTT");
    v.push(4);
    let mut flags = 0x80 | 0x40;
    if c.clean_session {
        flags |= 0x02;
    }
    if let Some(w) = &c.will {
        flags |= 0x04 | (w.qos << 3) | if w.retain { 0x20 } else { 0 };
    }
    v.push(flags);
    v.extend_from_slice(&c.keep_alive.to_be_bytes());
    put(&mut v, c.client_id.as_bytes());
    if let Some(w) = &c.will {
        put(&mut v, w.topic.as_bytes());
        put(&mut v, &w.payload);
    }
    put(&mut v, username.as_bytes());
    put(&mut v, password);
    let mut out = vec![0x10];
    let mut len = v.len();
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(&v);
    out
}

/// (topic, qos, packet id) of a PUBLISH.
pub fn parse_publish(packet: &[u8]) -> Option<(String, u8, u16)> {
    let qos = (packet[0] >> 1) & 0x03;
    let mut r = Reader(body(packet));
    let topic = r.string()?;
    let pkid = if qos > 0 { r.u16()? } else { 0 };
    Some((topic, qos, pkid))
}

/// The topic filters of a SUBSCRIBE.
pub fn parse_subscribe(packet: &[u8]) -> Option<Vec<String>> {
    let mut r = Reader(body(packet));
    r.u16()?;
    let mut filters = Vec::new();
    while !r.0.is_empty() {
        filters.push(r.string()?);
        r.u8()?;
    }
    (!filters.is_empty()).then_some(filters)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_round_trips_with_replaced_credentials() {
        let c = Connect {
            clean_session: false,
            keep_alive: 10,
            client_id: "robot-1".into(),
            will: Some(Will {
                topic: "gantry/robot-1/status".into(),
                payload: b"offline".to_vec(),
                qos: 1,
                retain: true,
            }),
            username: Some("robot-1".into()),
            password: Some(b"pw".to_vec()),
        };
        let bytes = encode_connect(&c, "robot-1", b"pw");
        assert_eq!(parse_connect(&bytes), Ok(c));
        assert_eq!(parse_connect(&bytes[..bytes.len() - 3]), Err(0x02));
    }

    #[test]
    fn credentials_bind_the_client_id() {
        let robots = HashMap::from([
            ("robot-1".to_string(), "secret".to_string()),
            (
                "robot-2".to_string(),
                // sha256("pw2")
                format!("sha256:{}", Sha256::digest(b"pw2").iter().map(|b| format!("{b:02x}")).collect::<String>()),
            ),
        ]);
        let observers = HashMap::from([("ops".to_string(), "watch".to_string())]);
        let creds = RobotCredentials(Some(Credentials { robots, observers }));
        assert_eq!(creds.admits("robot-1", Some("robot-1"), Some(b"secret")), Some(Role::Robot));
        assert_eq!(creds.admits("robot-2", Some("robot-2"), Some(b"pw2")), Some(Role::Robot));
        assert_eq!(creds.admits("ops", Some("ops"), Some(b"watch")), Some(Role::Observer));
        assert_eq!(creds.admits("robot-1", Some("robot-1"), Some(b"wrong")), None);
        assert_eq!(creds.admits("robot-2", Some("robot-1"), Some(b"secret")), None, "client id must be the username");
        assert_eq!(creds.admits("ops", Some("ops"), Some(b"secret")), None);
        assert_eq!(creds.admits("robot-3", Some("robot-3"), Some(b"x")), None);
        assert_eq!(creds.admits("robot-1", None, None), None);
        let open = RobotCredentials(None);
        assert_eq!(open.admits("robot-9", None, None), Some(Role::Robot));
        assert_eq!(open.admits("robot/9", None, None), None);
    }

    #[test]
    fn robots_stay_under_their_prefix_and_observers_only_watch() {
        let prefix = "gantry/robot-1/";
        let publish = |role, t| RobotCredentials::may_publish(role, prefix, t);
        let subscribe = |role, f| RobotCredentials::may_subscribe(role, prefix, f);
        assert!(publish(Role::Robot, "gantry/robot-1/logs"));
        assert!(!publish(Role::Robot, "gantry/robot-2/logs"));
        assert!(!publish(Role::Robot, "gantry/robot-10/logs"));
        assert!(!publish(Role::Observer, "gantry/ops/logs"));
        assert!(!publish(Role::Observer, "gantry/robot-1/logs"));
        assert!(subscribe(Role::Robot, "gantry/robot-1/model"));
        assert!(!subscribe(Role::Robot, "gantry/+/logs"));
        assert!(subscribe(Role::Observer, "gantry/+/status"));
        assert!(subscribe(Role::Observer, "gantry/#"));
        assert!(!subscribe(Role::Observer, "#"));
        assert!(!subscribe(Role::Observer, "$SYS/#"));
    }

    #[test]
    fn a_credentials_file_is_checked_on_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("creds.toml");
        let load = |text: &str| {
            std::fs::write(&path, text).unwrap();
            RobotCredentials::load(path.to_str().unwrap())
        };
        let ok = load("[robots]\nrobot-1 = \"a\"\n[observers]\nops = \"b\"\n").unwrap();
        assert_eq!(ok.0.unwrap().observers.len(), 1);
        let both = load("[robots]\nops = \"a\"\n[observers]\nops = \"b\"\n").unwrap_err();
        assert!(format!("{both:#}").contains("both a robot and an observer"), "{both:#}");
        let bad = load("[robots]\n\"robot/1\" = \"a\"\n").unwrap_err();
        assert!(format!("{bad:#}").contains("not a valid id"), "{bad:#}");
        let unknown = load("[robots]\n[admins]\nx = \"y\"\n").unwrap_err();
        assert!(format!("{unknown:#}").contains("admins"), "{unknown:#}");
    }
}
