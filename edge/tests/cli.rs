//! The contract's command line, run as a real process.

use std::process::Command;

fn edge() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gantry-edge"))
}

/// A configuration whose status page takes a free port, so tests run side by side.
fn run_config(dir: &std::path::Path) -> std::path::PathBuf {
    let file = dir.join("edge.toml");
    std::fs::write(&file, "[status_http]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    file
}

#[test]
fn default_config_round_trips_through_check_config() {
    let out = edge().arg("print-default-config").output().unwrap();
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("d.toml");
    std::fs::write(&file, &out.stdout).unwrap();
    let check = edge().arg("check-config").arg(&file).output().unwrap();
    assert_eq!(check.status.code(), Some(0), "{}", String::from_utf8_lossy(&check.stderr));
    assert!(check.stderr.is_empty());
}

#[test]
fn each_class_of_bad_config_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text, key) in [
        ("unknown.toml", "[camera]\nfoo = 1\n", "camera.foo"),
        ("type.toml", "[camera]\nfps = \"x\"\n", "camera.fps"),
        ("range.toml", "[health]\nperiod_s = 0\n", "health.period_s"),
        ("cross.toml", "[control]\nrate_hz = 10\n", "control.rate_hz"),
    ] {
        let file = dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        let out = edge().arg("check-config").arg(&file).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        let line = stderr.lines().next().unwrap_or_default();
        assert!(line.starts_with(&format!("{}: {key}: ", file.display())), "{name}: {line}");
        assert!(line.contains("(expected "), "{name}: {line}");
    }
}

/// What `run` would refuse is refused by `check-config` too; what `run` would
/// start degraded on is a warning.
#[test]
fn check_config_opens_the_files_the_configuration_names() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    std::fs::write(path("not-onnx.onnx"), b"not an ONNX graph").unwrap();
    std::fs::write(path("bad-creds.toml"), "user = \"robot-0\"\n").unwrap();
    std::fs::write(path("creds.toml"), format!("username = \"robot-0\"\nca_path = {:?}\n", path("no-ca.pem"))).unwrap();
    for (name, text, key) in [
        ("safety.toml", format!("[governor]\nsafety_model = {:?}\n", path("not-onnx.onnx")), "governor.safety_model"),
        (
            "creds-syntax.toml",
            format!("[uplink]\ncredentials_path = {:?}\n", path("bad-creds.toml")),
            "uplink.credentials_path",
        ),
        (
            "creds-ca.toml",
            format!("[uplink]\ncredentials_path = {:?}\n", path("creds.toml")),
            "uplink.credentials_path",
        ),
        (
            "token.toml",
            format!("[status_http]\noperator_token_file = {:?}\n", path("no-token")),
            "status_http.operator_token_file",
        ),
        ("key.toml", "[models]\nfleet_public_key = \"abc\"\n".to_string(), "models.fleet_public_key"),
    ] {
        let file = dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        let out = edge().arg("check-config").arg(&file).output().unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(stderr.starts_with(&format!("{}: {key}: ", file.display())), "{name}: {stderr}");
    }

    let file = dir.path().join("model.toml");
    std::fs::write(&file, format!("[policy]\nmodel_dir = {:?}\n", path("no-such-model"))).unwrap();
    let out = edge().arg("check-config").arg(&file).output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with(&format!("{}: warning: policy.model_dir: ", file.display())), "{stderr}");
    assert!(stderr.contains("fall back to the baseline"), "{stderr}");
}

#[test]
fn run_stops_cleanly_after_duration() {
    let dir = tempfile::tempdir().unwrap();
    let out = edge()
        .args(["run", "--duration", "0.2", "--config"])
        .arg(run_config(dir.path()))
        .env("GANTRY_DATA_DIR", dir.path().join("robot"))
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("gantry-edge shutting down"), "{stderr}");
    assert!(dir.path().join("robot").is_dir());
}

#[test]
fn run_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = edge()
        .args(["run", "--config"])
        .arg(run_config(dir.path()))
        .env("GANTRY_DATA_DIR", dir.path().join("robot"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the daemon's own "running" log line on stderr.
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("gantry-edge running") {
        line.clear();
        assert!(std::io::BufRead::read_line(&mut stderr, &mut line).unwrap() > 0, "daemon exited before running");
    }
    // SAFETY: plain kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

/// Under systemd (`Type=notify`, `WatchdogSec=`): READY=1 once running,
/// WATCHDOG=1 at half the watchdog interval while the loop ticks, STOPPING=1 on
/// SIGTERM, through a real notification socket.
#[test]
fn run_speaks_the_systemd_notify_protocol() {
    use std::os::unix::net::UnixDatagram;
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut child = edge()
        .args(["run", "--config"])
        .arg(run_config(dir.path()))
        .env("GANTRY_DATA_DIR", dir.path().join("robot"))
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let mut recv = || {
        let n = socket.recv(&mut buf).expect("a notification within 30 s");
        String::from_utf8_lossy(&buf[..n]).to_string()
    };
    let ready = recv();
    assert!(ready.starts_with("READY=1"), "{ready}");
    // Every 200 ms while the loop ticks: five of them take about a second.
    let started = Instant::now();
    for _ in 0..5 {
        assert_eq!(recv(), "WATCHDOG=1");
    }
    assert!(started.elapsed() < Duration::from_secs(5), "watchdog pings too slow: {:?}", started.elapsed());
    // SAFETY: plain kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let mut last = recv();
    while last == "WATCHDOG=1" {
        last = recv();
    }
    assert_eq!(last, "STOPPING=1");
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
