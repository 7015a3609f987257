//! The contract's command line, run as a real process.

use std::process::Command;

fn sync() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gantry-sync"))
}

#[test]
fn default_config_round_trips_through_check_config() {
    let out = sync().arg("print-default-config").output().unwrap();
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("d.toml");
    std::fs::write(&file, &out.stdout).unwrap();
    let check = sync().arg("check-config").arg(&file).output().unwrap();
    assert_eq!(check.status.code(), Some(0), "{}", String::from_utf8_lossy(&check.stderr));
    assert!(check.stderr.is_empty());
}

#[test]
fn each_class_of_bad_config_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text, key) in [
        ("unknown.toml", "[http]\nfoo = 1\n", "http.foo"),
        ("type.toml", "[http]\nlisten = 5\n", "http.listen"),
        ("range.toml", "[ingest]\nmax_payload_kb = 0\n", "ingest.max_payload_kb"),
        ("cross.toml", "[uploads]\nrobot_bandwidth_mbps = 5000.0\n", "uploads.robot_bandwidth_mbps"),
    ] {
        let file = dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        let out = sync().arg("check-config").arg(&file).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        let line = stderr.lines().next().unwrap_or_default();
        assert!(line.starts_with(&format!("{}: {key}: ", file.display())), "{name}: {line}");
        assert!(line.contains("(expected "), "{name}: {line}");
    }
}

/// The files `run` reads are opened and parsed by `check-config` too.
#[test]
fn check_config_opens_the_files_the_configuration_names() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("robots.toml");
    std::fs::write(&creds, "[robots]\n\"robot 0\" = \"pw\"\n").unwrap();
    for (name, text, key) in [
        (
            "creds.toml",
            format!("[broker]\ncredentials_path = {:?}\n", creds.display().to_string()),
            "broker.credentials_path",
        ),
        ("key.toml", "[models]\nfleet_public_key = \"/no/such/key\"\n".to_string(), "models.fleet_public_key"),
    ] {
        let file = dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        let out = sync().arg("check-config").arg(&file).output().unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(stderr.starts_with(&format!("{}: {key}: ", file.display())), "{name}: {stderr}");
    }
}

/// A configuration on free ports, so tests run side by side.
fn run_config(dir: &std::path::Path) -> std::path::PathBuf {
    let file = dir.join("sync.toml");
    std::fs::write(&file, "[broker]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    file
}

#[test]
fn run_stops_cleanly_after_duration() {
    let dir = tempfile::tempdir().unwrap();
    let out = sync()
        .args(["run", "--duration", "0.2", "--config"])
        .arg(run_config(dir.path()))
        .env("GANTRY_DATA_DIR", dir.path().join("cloud"))
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("gantry-sync shutting down"), "{stderr}");
    assert!(dir.path().join("cloud").is_dir());
}

#[test]
fn run_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = sync()
        .args(["run", "--config"])
        .arg(run_config(dir.path()))
        .env("GANTRY_DATA_DIR", dir.path().join("cloud"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the daemon's own "running" log line on stderr.
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("gantry-sync running") {
        line.clear();
        assert!(std::io::BufRead::read_line(&mut stderr, &mut line).unwrap() > 0, "daemon exited before running");
    }
    // SAFETY: plain kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}
