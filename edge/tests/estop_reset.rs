//! The e-stop reset as a technician does it, on the whole daemon and the
//! simulator: a press stops the moving arm and is one incident; a reset is
//! refused while the button is pressed and without the operator token; with it
//! (over HTTP and `gantry-edge estop-reset`) the latch clears.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use gantry_config::EdgeConfig;
use gantry_edge::daemon::Daemon;
use gantry_edge::governor::Check;
use gantry_edge::pipeline::Options;

const TOKEN: &str = "s3cret-operator-token";

async fn status(http: &reqwest::Client, base: &str) -> serde_json::Value {
    http.get(format!("{base}/api/status")).send().await.unwrap().json().await.unwrap()
}

fn estop_incidents(s: &serde_json::Value) -> usize {
    s["governor"]["recent_incidents"].as_array().unwrap().iter().filter(|i| i["check"] == Check::EStop.name()).count()
}

async fn reset(http: &reqwest::Client, base: &str, token: Option<&str>) -> (u16, String) {
    let mut req = http.post(format!("{base}/api/estop/reset"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_estop_press_holds_until_a_reset_with_the_operator_token() {
    let tmp = tempfile::tempdir().unwrap();
    let token_file = tmp.path().join("operator-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let mut c = EdgeConfig::default();
    c.robot.data_dir = tmp.path().join("data").display().to_string();
    c.status_http.listen = "127.0.0.1:0".into();
    c.status_http.operator_token_file = token_file.display().to_string();
    c.policy.model_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/baseline").into();
    c.policy.baseline_model_dir = c.policy.model_dir.clone();
    c.realtime.lock_memory = false;
    c.uplink.broker_url = "mqtt://127.0.0.1:9".into();
    let daemon = Daemon::start(&c, gantry_hal::Pacing::RealTime, Options::default()).await.unwrap();
    let base = format!("http://{}", daemon.status_addr);
    let view = daemon.view();
    let sim = daemon.pipeline().simulator().expect("the simulated firmware");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let until = |what: &str| {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
    };

    // Working first: commands flow and the page says the e-stop is released.
    while view.pipeline.ticks.load(Relaxed) < 200 || sim.state().commands_received < 100 {
        until("the daemon to get going");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s = status(&http, &base).await;
    assert_eq!(
        (s["estop"]["known"].as_bool(), s["estop"]["pressed"].as_bool(), s["estop"]["latched"].as_bool()),
        (Some(true), Some(false), Some(false)),
        "{s:#}"
    );
    assert_eq!(s["estop"]["reset_over_http"], true);
    // (Before the firmware's first e-stop report the check failed too.)
    let estop_incidents_before = estop_incidents(&s);

    sim.press_estop();
    loop {
        let s = status(&http, &base).await;
        if s["estop"]["pressed"] == true && s["mode"] == "estop" {
            break;
        }
        until("the press on the page");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (code, body) = reset(&http, &base, Some(TOKEN)).await;
    assert_eq!(code, 409, "a reset while the button is pressed: {body}");
    sim.release_estop();
    loop {
        let s = status(&http, &base).await;
        if s["estop"]["pressed"] == false {
            assert_eq!(s["estop"]["latched"], true, "released but latched: {s:#}");
            assert_eq!(s["mode"], "estop");
            break;
        }
        until("the release on the page");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Held, however long: the arm is not commanded anywhere new.
    let held = sim.state().targets_rad;
    assert_eq!(reset(&http, &base, None).await.0, 401, "no token");
    assert_eq!(reset(&http, &base, Some("guess")).await.0, 401, "wrong token");
    assert_eq!(sim.state().targets_rad, held, "a refused reset changes nothing");
    let s = status(&http, &base).await;
    assert_eq!((s["estop"]["latched"].as_bool(), s["mode"].as_str()), (Some(true), Some("estop")), "{s:#}");
    // One press, one incident, however many ticks it held the arm.
    assert_eq!(estop_incidents(&s) - estop_incidents_before, 1, "{:#}", s["governor"]["recent_incidents"]);

    // The CLI, against the same daemon, with the token from its configuration.
    let config_file = tmp.path().join("edge.toml");
    std::fs::write(
        &config_file,
        format!(
            "[status_http]\nlisten = \"{}\"\noperator_token_file = \"{}\"\n",
            daemon.status_addr,
            token_file.display()
        ),
    )
    .unwrap();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_gantry-edge"))
            .args(["estop-reset", "--config"])
            .arg(&config_file)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    loop {
        let s = status(&http, &base).await;
        if s["estop"]["latched"] == false && s["mode"] != "estop" {
            assert_eq!(s["estop"]["presses"], 1);
            assert_eq!(s["estop"]["resets"], 1);
            assert_eq!(s["estop"]["resets_refused"], 1, "the one while pressed");
            break;
        }
        until("the latch to clear after the reset");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(view.governor.per_check[Check::EStop as usize].load(Relaxed) > 10, "every held tick was rejected");
    daemon.stop().await;
}
