//! The systemd notification protocol (`sd_notify(3)`): datagrams to the socket
//! named by `NOTIFY_SOCKET`. `READY=1` once the robot runs, `WATCHDOG=1` only
//! while the control loop advances (so `WatchdogSec=` restarts a daemon whose
//! loop stopped), `STOPPING=1` on the way out. Without `NOTIFY_SOCKET` (not
//! started by systemd) nothing is sent.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

pub struct SdNotify {
    socket: UnixDatagram,
    addr: SocketAddr,
}

impl SdNotify {
    /// The notifier `NOTIFY_SOCKET` names, if any.
    pub fn from_env() -> io::Result<Option<Self>> {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(path) if !path.is_empty() => Self::connect(&path.to_string_lossy()).map(Some),
            _ => Ok(None),
        }
    }

    /// A notifier for `path`; a leading `@` names an abstract socket.
    pub fn connect(path: &str) -> io::Result<Self> {
        let addr = match path.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt as _;
                SocketAddr::from_abstract_name(name.as_bytes())?
            }
            None => SocketAddr::from_pathname(path)?,
        };
        Ok(Self { socket: UnixDatagram::unbound()?, addr })
    }

    pub fn send(&self, state: &str) -> io::Result<()> {
        self.socket.send_to_addr(state.as_bytes(), &self.addr).map(|_| ())
    }
}

/// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC` when systemd set
/// a watchdog for this process, else `None`.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Some(pid) = std::env::var("WATCHDOG_PID").ok().and_then(|p| p.parse::<u32>().ok()) {
        if pid != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}
