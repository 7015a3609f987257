//! The fault suite, a full disk on the robot: the daemon records onto a small
//! disk of its own, a ballast file fills it, and later goes. While the disk
//! is full the daemon stays up, the arm keeps working under the governor,
//! and the status page says the disk is full and how much is lost; once
//! there is room it records again on its own, and every segment it finished
//! is intact.
//!
//! The small disk is a 48 MB tmpfs mounted in a mount namespace of the
//! daemon's own (a child process: this test binary re-executed), so nothing
//! outside the test sees it. That takes CAP_SYS_ADMIN, as root in CI has.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use gantry_edge::daemon::Daemon;
use gantry_edge::pipeline::Options;
use gantry_tests::faults::{says, StatusPage};
use gantry_tests::robot_config;

const CHILD_ENV: &str = "GANTRY_DISK_FULL_DIR";

/// The robot's child: the daemon with its data on DIR, the small disk. It
/// prints its status page's address.
#[test]
fn child_robot() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    gantry_tests::child::die_with_parent();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // No cloud: the uplink keeps its batches in the outbox, on the same disk.
        let mut config = robot_config("robot-disk", Path::new(&dir), "mqtt://127.0.0.1:9");
        config.recorder.quota_gb = 0.02;
        config.recorder.segment_max_mb = 1;
        config.recorder.flush_s = 1;
        let daemon = Daemon::start(&config, gantry_hal::Pacing::RealTime, Options::default()).await.unwrap();
        println!("ready {}", daemon.status_addr);
        std::future::pending::<()>().await;
    });
}

/// Starts the child in a mount namespace of its own with a 48 MB tmpfs on
/// `dir`; returns it and its status page's address.
fn spawn_on_small_disk(dir: &Path) -> (Child, std::net::SocketAddr) {
    std::fs::create_dir_all(dir).unwrap();
    let target = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child_robot", "--nocapture", "--test-threads", "1"])
        .env(CHILD_ENV, dir)
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // SAFETY: between fork and exec only system calls run, on memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let tmpfs = c"tmpfs";
            if libc::unshare(libc::CLONE_NEWNS) != 0
                || libc::mount(
                    c"none".as_ptr(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) != 0
                || libc::mount(tmpfs.as_ptr(), target.as_ptr(), tmpfs.as_ptr(), 0, c"size=48m".as_ptr().cast()) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap_or_else(|e| {
        panic!(
            "the disk-full test mounts a tmpfs in a mount namespace of its own, which needs CAP_SYS_ADMIN (root): {e}"
        )
    });
    let addr = gantry_tests::child::wait_ready(&mut child, "the robot on the small disk").parse().unwrap();
    (child, addr)
}

/// Fills the child's disk with a ballast file, up to the last byte.
fn fill(ballast: &Path) {
    let mut f = std::fs::File::create(ballast).expect("the ballast file is created while there is room");
    let block = vec![0u8; 256 * 1024];
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_reported_costs_only_recording_and_clears() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("robot");
    let (mut child, addr) = spawn_on_small_disk(&dir);
    // The parent sees the child's mounts through its root.
    let seen: PathBuf = format!("/proc/{}/root{}", child.id(), dir.display()).into();
    let robot = StatusPage::new(addr);

    // Recording, with chunks of the open segment already on disk.
    let first = robot.until("recording", |s| s["recorder"]["bytes_today"].as_u64().unwrap() > 100_000).await;
    assert_eq!(first["recorder"]["failing"], false);

    fill(&seen.join("ballast"));
    let full = robot
        .until("the full disk reported", |s| {
            says(s, "disk full: recording stopped") && s["recorder"]["disk_full"] == true && s["state"] == "red"
        })
        .await;
    // The arm keeps working: the loop ticks on and the governor rejects nothing.
    let later = robot
        .until("a second of work with the disk full", |s| {
            s["loop"]["ticks"].as_u64().unwrap() > full["loop"]["ticks"].as_u64().unwrap() + 100
        })
        .await;
    assert_eq!(later["mode"], "running", "{later:#}");
    assert!(later["recorder"]["dropped"].as_u64().unwrap() > full["recorder"]["dropped"].as_u64().unwrap());
    assert!(says(&later, "disk full"), "{later:#}");
    assert_eq!(later["governor"]["rejects"], full["governor"]["rejects"], "the full disk costs no action: {later:#}");
    assert!(child.try_wait().unwrap().is_none(), "the daemon is up");

    std::fs::remove_file(seen.join("ballast")).unwrap();
    let written = later["recorder"]["messages"].as_u64().unwrap();
    let after = robot
        .until("recording again", |s| {
            !says(s, "disk")
                && s["recorder"]["failing"] == false
                && s["recorder"]["messages"].as_u64().unwrap() > written
        })
        .await;
    assert_eq!(after["recorder"]["disk_full"], false);
    assert!(after["recorder"]["write_errors"].as_u64().unwrap() >= 1);
    // The segment open when the disk filled is rebuilt from its complete
    // chunks once there is room; only the segment being written is unfinished.
    let after =
        robot.until("the interrupted segment rebuilt", |s| s["recorder"]["recovered"].as_u64().unwrap() >= 1).await;
    let partial = std::fs::read_dir(seen.join("segments"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".partial"))
        .count();
    assert!(partial <= 1, "{partial} unfinished segments: {after:#}");

    // Every segment finished on this disk reads back whole: the full disk cost
    // records, never a file.
    let finished: Vec<PathBuf> = std::fs::read_dir(seen.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "mcap"))
        .collect();
    assert!(!finished.is_empty(), "segments were finished");
    for p in &finished {
        let (messages, _) =
            gantry_edge::record::segment::summarize(p).unwrap_or_else(|e| panic!("{}: {e:#}", p.display()));
        assert!(messages > 0, "{}", p.display());
    }
    child.kill().unwrap();
    child.wait().unwrap();
}
