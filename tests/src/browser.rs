//! Headless Chromium (Debian's `chromium`, or `$CHROMIUM`) on a page: its DOM
//! after the scripts ran, and screenshots kept for people to look at.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The browser binary; fails the test with how to install it.
pub fn chromium() -> String {
    let bin = std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let found = Command::new(&bin).arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{bin} not found: install Debian's chromium (`apt-get install -y chromium`; .ci/run does) or set CHROMIUM"
    );
    bin
}

fn run(url: &str, width: u32, height: u32, extra: &str) -> std::process::Output {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--virtual-time-budget=3000",
            &format!("--window-size={width},{height}"),
            &format!("--user-data-dir={}", profile.path().display()),
            extra,
            url,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "chromium {extra} {url}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// The page's DOM once loaded (scripts run).
pub fn dom(url: &str) -> String {
    String::from_utf8_lossy(&run(url, 1400, 1000, "--dump-dom").stdout).into_owned()
}

/// Where screenshots are kept: `$GANTRY_SCREENSHOTS`, else
/// `$TMPDIR/gantry-screenshots`.
pub fn screenshot_dir() -> PathBuf {
    let dir = std::env::var_os("GANTRY_SCREENSHOTS")
        .map_or_else(|| std::env::temp_dir().join("gantry-screenshots"), PathBuf::from);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A screenshot of `url` as `name`.png in [`screenshot_dir`]; returns its path
/// after checking it is a real, non-blank PNG.
pub fn screenshot(url: &str, name: &str, width: u32, height: u32) -> PathBuf {
    let path = screenshot_dir().join(format!("{name}.png"));
    run(url, width, height, &format!("--screenshot={}", path.display()));
    check_png(&path);
    eprintln!("screenshot: {}", path.display());
    path
}

fn check_png(path: &Path) {
    let png = std::fs::read(path).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display());
    assert!(png.len() > 20_000, "a rendered page, not a blank one: {} bytes", png.len());
}

/// The value of `attr` on the first element whose opening tag contains `marker`.
pub fn attr(dom: &str, marker: &str, attr: &str) -> Option<String> {
    let at = dom.find(marker)?;
    let start = dom[..at].rfind('<')?;
    let end = at + dom[at..].find('>')?;
    let tag = &dom[start..end];
    let key = format!("{attr}=\"");
    let v = tag.find(&key)? + key.len();
    Some(tag[v..v + tag[v..].find('"')?].to_string())
}
