//! The technician's page of one simulated robot (connected to a cloud sync),
//! screenshotted in four states, each first checked in the HTML the robot
//! serves (no JavaScript needed) and in `/api/status`:
//! 1. normal: green, the arm running, nothing to do;
//! 2. a person in the work cell: amber, the arm held, the sentence says so;
//! 3. the firmware link lost: red, how long, which cable to check;
//! 4. the e-stop pressed, then released and latched with the reset control;
//!    the reset (with the operator token) brings the arm back.
//!
//! Screenshots go to `$GANTRY_SCREENSHOTS` (default `$TMPDIR/gantry-screenshots`).

use gantry_edge::daemon::Daemon;
use gantry_tests::browser::screenshot;
use gantry_tests::faults::{arm_moving, says, StatusPage};
use gantry_tests::{cloud_config, robot_config};

async fn html(url: &str) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

async fn shot(url: &str, name: &'static str) {
    let url = url.to_string();
    tokio::task::spawn_blocking(move || screenshot(&url, name, 1280, 1100)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_robot_page_in_words_in_four_states() {
    let tmp = tempfile::tempdir().unwrap();
    let service = gantry_sync::Service::start(&cloud_config(&tmp.path().join("cloud"), "127.0.0.1:0")).await.unwrap();
    let token_file = tmp.path().join("operator-token");
    std::fs::write(&token_file, "let-me-reset\n").unwrap();
    let mut config =
        robot_config("robot-page", &tmp.path().join("robot"), &format!("mqtt://{}", service.mqtt_addr.unwrap()));
    config.status_http.operator_token_file = token_file.display().to_string();
    // A person walks in at 14 s of scene time and leaves at 20 s.
    config.synthetic.person_event = true;
    config.synthetic.person_enter_s = 14.0;
    config.synthetic.person_leave_s = 20.0;
    let daemon = Daemon::start(&config, gantry_hal::Pacing::RealTime, Default::default()).await.unwrap();
    let sim = daemon.pipeline().simulator().expect("simulated firmware");
    let page = StatusPage::new(daemon.status_addr);
    let url = format!("http://{}/", daemon.status_addr);

    // 1. Normal.
    let s = page.until("green and running", |s| s["state"] == "green" && s["activity"] == "running").await;
    assert!(s["reasons"].as_array().unwrap().is_empty(), "{s:#}");
    arm_moving(sim, "normal").await;
    let h = html(&url).await;
    assert!(h.contains("id=state-word>green · running</div>"), "banner");
    assert!(h.contains("All checks pass: the arm runs the policy."));
    assert!(h.contains("<b id=estop>released</b>"));
    shot(&url, "robot-1-normal").await;

    // 2. A person in the work cell: held, in words, amber (not a fault).
    let s = page
        .until("the person seen", |s| s["activity"] == "held" && says(s, "A person or object is inside the work cell"))
        .await;
    assert_eq!(s["state"], "amber", "{s:#}");
    assert_eq!(s["mode"], "running", "the contract's mode stays; the page says held");
    let h = html(&url).await;
    assert!(h.contains("<b id=mode>held</b>"), "the header's word agrees with the banner");
    assert!(h.contains("the arm waits until it is clear"));
    assert!(h.contains(" m from the arm (stop distance "), "with the distance and its unit");
    assert!(h.contains("data-check=\"workspace_clear\""), "the incident grouped with its meaning");
    shot(&url, "robot-2-person-in-cell").await;
    page.until("the person gone", |s| s["state"] == "green" && s["activity"] == "running").await;
    arm_moving(sim, "after the person left").await;

    // 3. The firmware link lost.
    sim.cut_link(true);
    let s = page
        .until("the link loss reported with its duration", |s| {
            says(s, "Firmware link down for") && !says(s, "down for 0 s")
        })
        .await;
    assert_eq!(s["state"], "red");
    let h = html(&url).await;
    assert!(h.contains("check the motor controller&#39;s power and its serial cable"), "what to do");
    assert!(h.contains("<td class=n id=\"link\">DOWN</td>"));
    shot(&url, "robot-3-firmware-link-lost").await;
    sim.cut_link(false);
    page.until("the link back", |s| s["firmware"]["link_alive"] == true && s["state"] == "green").await;
    arm_moving(sim, "after the link came back").await;

    // 4. The e-stop: pressed, then released and latched with the reset control.
    sim.press_estop();
    let s = page.until("the e-stop pressed", |s| s["mode"] == "estop" && says(s, "The e-stop button is pressed")).await;
    assert_eq!(s["activity"], "e-stop");
    let h = html(&url).await;
    assert!(h.contains("<b id=mode>e-stop</b>") && h.contains("PRESSED"));
    assert!(!h.contains("id=estop-reset"), "no reset while the button is pressed");
    shot(&url, "robot-4-estop-pressed").await;
    sim.release_estop();
    page.until("released and latched", |s| says(s, "released: once the cell is safe, reset it")).await;
    let h = html(&url).await;
    assert!(h.contains("released, still latched") && h.contains("<button id=estop-reset"), "the reset control");
    shot(&url, "robot-5-estop-latched").await;
    let reset =
        reqwest::Client::new().post(format!("{url}api/estop/reset")).bearer_auth("let-me-reset").send().await.unwrap();
    assert_eq!(reset.status(), 200);
    page.until("running after the reset", |s| s["mode"] == "running" && s["state"] == "green").await;
    arm_moving(sim, "after the reset").await;
    let _ = daemon.stop().await;
    service.stop().await;
}
