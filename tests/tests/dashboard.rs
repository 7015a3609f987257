//! The operator's fleet page in headless Chromium.
//!
//! - 1,000 robots (a test-only feed: robot rows and VDA 5050 state messages
//!   handed to cloud sync as its MQTT loop would, tasks written to its
//!   catalog, a week of trend samples): every headline figure is on the page
//!   with the value the feed implies, the robot in e-stop has a firing alert,
//!   the grid holds 1,000 rows and filters to the ones not green, the HTML is
//!   under 1 MB. The render time the browser measured is printed, not asserted.
//! - A live `gantry-fleet` of 5 simulated robots: the figures come from the
//!   robots themselves (latency, health, tasks they ran), and pressing one
//!   robot's e-stop shows a firing alert on the page.
//!
//! Screenshots are kept in `$GANTRY_SCREENSHOTS` (default
//! `$TMPDIR/gantry-screenshots`).

use std::time::Duration;

use gantry_config::task::{Header, Phase, RobotState, Telemetry};
use gantry_sync::tasks::{NewTask, TaskCatalog, TaskState};
use gantry_tests::browser::{self, attr, screenshot};
use gantry_tests::{cloud_config, wait_for, Fleet, FleetOptions};

const NS: u64 = 1_000_000_000;

fn now() -> u64 {
    gantry_hal::clock::unix_ns()
}

/// How the feed shapes robot `i`.
struct Shape {
    offline: bool,
    estop: bool,
    health: &'static str,
    model: &'static str,
}

fn shape(i: usize) -> Shape {
    let offline = i % 100 == 99;
    let estop = i == 7;
    let health = if estop || i.is_multiple_of(97) {
        "red"
    } else if i % 50 == 25 {
        "amber"
    } else {
        "green"
    };
    Shape { offline, estop, health, model: if i.is_multiple_of(5) { "cand-8" } else { "prod-7" } }
}

fn robot_id(i: usize) -> String {
    format!("robot-{i:04}")
}

/// Finishes a new task of `kind` on `robot` at `at` as `state` (with `reason`).
fn finished_task(catalog: &dyn TaskCatalog, id: &str, kind: &str, robot: &str, at: u64, ok: bool, reason: &str) {
    let new = NewTask::from_json(&serde_json::json!({"id": id, "kind": kind}), at).unwrap();
    let (mut t, created) = catalog.insert_task(&new, at).unwrap();
    assert!(created);
    // The service's scheduler may assign the new task first (its rev moves
    // on): read it again and finish it then.
    loop {
        t.state = if ok { TaskState::Completed } else { TaskState::Failed };
        t.robot_id = Some(robot.into());
        t.attempts = 1;
        t.started_unix_ns = Some(at.saturating_sub(20 * NS));
        t.finished_unix_ns = Some(at);
        t.success = Some(ok);
        t.reason = (!ok).then(|| reason.to_string());
        t.progress = 1.0;
        if catalog.save_task(&mut t, &[], at).unwrap() {
            return;
        }
        t = catalog.task(id).unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_robots_on_the_fleet_page() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = cloud_config(dir.path(), "127.0.0.1:0");
    config.alerts.eval_period_ms = 200;
    config.alerts.robot_offline.for_s = 1;
    let service = gantry_sync::Service::start(&config).await.unwrap();
    let t0 = now();

    // A week of history first: trend samples every 2 hours and tasks finished
    // along the way (the sample's own figures vary so the plots have shape).
    let catalog = service.task_service.catalog();
    let base = service.fleet.snapshot(t0).unwrap();
    for h in (2..7 * 24).rev().step_by(2) {
        let at = t0 - h * 3600 * NS;
        let mut s = base.clone();
        s.unix_ns = at;
        s.robots = 1000;
        s.healthy = 940 + (h % 40);
        s.latency_mean_ms = Some(8.0 + (h % 7) as f64);
        s.latency_p95_ms = Some(15.0 + (h % 11) as f64);
        assert!(service.fleet.sample_trend(&s).unwrap());
        // Tasks of earlier days only: today's figures are the feed's below.
        let midnight = t0 - t0 % (24 * 3600 * NS);
        for k in (0..10u64).filter(|_| at < midnight) {
            let ok = (h + k) % 23 != 0;
            finished_task(
                catalog,
                &format!("past-{h}-{k}"),
                "pick",
                &robot_id((h + k) as usize % 990),
                at,
                ok,
                "blocked",
            );
        }
    }

    // Now: 1,000 robots.
    let mut expect_healthy = 0;
    for i in 0..1000 {
        let id = robot_id(i);
        let sh = shape(i);
        if sh.offline {
            service.catalog.touch_robot(&id, t0 - 600 * NS).unwrap();
            service.catalog.set_robot_state(&id, "online", Some(sh.model)).unwrap();
            continue;
        }
        service.catalog.touch_robot(&id, t0).unwrap();
        service.catalog.set_robot_state(&id, "online", Some(sh.model)).unwrap();
        expect_healthy += usize::from(sh.health == "green");
        let state = RobotState {
            header: Header::new(1, t0),
            robot_id: id.clone(),
            order_id: String::new(),
            order_update_id: 0,
            task_id: String::new(),
            phase: Phase::Idle,
            progress: 0.0,
            operating_mode: if sh.estop { "service" } else { "automatic" }.into(),
            mode: if sh.estop { "estop" } else { "running" }.into(),
            health: sh.health.into(),
            kinds: vec!["pick".into(), "place".into()],
            errors: vec![],
            results: vec![],
            telemetry: Telemetry {
                model_version: sh.model.into(),
                site: format!("hall-{}", i % 4 + 1),
                latency_mean_ms: Some(6.0 + (i % 10) as f64),
                latency_p95_ms: Some(10.0 + (i % 30) as f64),
                net_rtt_ms: Some(1.0 + (i % 20) as f64),
                disk_free_pct: Some(20.0 + (i % 70) as f64),
            },
        };
        service.task_service.on_state(&id, &serde_json::to_vec(&state).unwrap(), t0).await.unwrap();
    }
    // Today: 196 completed, 4 failed (3 blocked, 1 estop).
    let today = t0 - 60 * NS;
    for k in 0..200 {
        let (ok, reason) = match k {
            0..=2 => (false, "blocked"),
            3 => (false, "estop"),
            _ => (true, ""),
        };
        finished_task(
            catalog,
            &format!("today-{k}"),
            if k % 2 == 0 { "pick" } else { "place" },
            &robot_id(k * 3 % 990),
            today,
            ok,
            reason,
        );
    }

    // The e-stop alert fires (the rule is for_s = 0 by default).
    wait_for("the e-stop alert", Duration::from_secs(30), || {
        service.journal.firing().unwrap().iter().any(|a| a.rule == "robot_estop" && a.subject == "robot-0007")
    })
    .await;

    let url = format!("http://{}/", service.http_addr);
    let html = reqwest::get(&url).await.unwrap().text().await.unwrap();
    let api: serde_json::Value = reqwest::get(format!("{url}api/fleet")).await.unwrap().json().await.unwrap();
    assert_eq!(api["robots"], 1000);
    assert_eq!(api["online"], 990);
    assert_eq!(api["healthy"], expect_healthy);
    assert_eq!(api["tasks_completed_today"], 196);
    assert_eq!(api["success_rate"], 0.98);
    assert_eq!(api["models"], serde_json::json!({"cand-8": 200, "prod-7": 790}));
    let p95 = api["latency_ms"]["p95"].as_f64().unwrap();
    assert!((10.0..=39.0).contains(&p95), "{p95}");
    assert_eq!(api["top_failures"][0], serde_json::json!({"reason": "blocked", "tasks": 3}));
    assert!(api["trends"].as_array().unwrap().len() >= 80, "a week of points: {}", api["trends"]);

    // The server's HTML already says it all (no JavaScript needed).
    assert!(html.len() < 1 << 20, "the page is {} bytes", html.len());
    assert!(html.contains("id=\"kpi-success\" data-value=\"0.9800\""), "success KPI in the served HTML");

    let dom = tokio::task::spawn_blocking({
        let url = url.clone();
        move || browser::dom(&url)
    })
    .await
    .unwrap();
    assert_eq!(attr(&dom, "id=\"kpi-success\"", "data-value").as_deref(), Some("0.9800"));
    assert!(dom.contains("196 of 200 finished · target 98.0 %"), "success against its target");
    assert_eq!(attr(&dom, "id=\"kpi-healthy\"", "data-value"), Some(expect_healthy.to_string()));
    assert!(dom.contains(&format!("{expect_healthy} of 1000")));
    assert_eq!(attr(&dom, "id=\"kpi-tasks\"", "data-value").as_deref(), Some("196"));
    assert_eq!(attr(&dom, "id=\"kpi-latency\"", "data-value"), Some(format!("{p95:.3}")));
    assert!(dom.contains("target p95 ≤ 100 ms"));
    assert_eq!(attr(&dom, "id=\"kpi-models\"", "data-value").as_deref(), Some("2"));
    assert!(dom.contains("cand-8 20 %") && dom.contains("prod-7 80 %"), "model shares");
    assert!(
        dom.contains(
            "class=\"alert firing\" data-rule=\"robot_estop\" data-state=\"firing\" data-subject=\"robot-0007\""
        ),
        "the firing e-stop alert is on the page"
    );
    assert_eq!(attr(&dom, "id=\"grid-count\"", "data-shown").as_deref(), Some("1000"));
    assert_eq!(dom.matches("<tr data-robot=").count(), 1000);
    assert!(dom.contains("id=\"trend-success\"") && dom.contains("<polyline"), "trend plots");
    assert!(dom.contains("data-reason=\"blocked\""), "top failure modes");
    let render_ms = attr(&dom, "<html", "data-render-ms").expect("the page noted its render time");
    eprintln!(
        "fleet page at 1000 robots: {} bytes of HTML, rendered (load event) in {render_ms} ms in headless Chromium",
        html.len()
    );

    // Filtered to what needs a look: the grid has only the robots not green.
    let problem = tokio::task::spawn_blocking({
        let url = url.clone();
        move || browser::dom(&format!("{url}?state=problem"))
    })
    .await
    .unwrap();
    let not_green = 1000 - expect_healthy;
    assert_eq!(attr(&problem, "id=\"grid-count\"", "data-shown"), Some(not_green.to_string()));
    assert_eq!(problem.matches("<tr data-robot=").count(), not_green);
    assert!(!problem.contains("data-state=\"green\""));

    tokio::task::spawn_blocking(move || {
        screenshot(&url, "fleet-1000-robots", 1400, 1600);
        screenshot(&format!("{url}?state=problem#robots"), "fleet-1000-robots-not-green", 1400, 1200);
    })
    .await
    .unwrap();
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_fleet_of_five_on_the_page_and_an_estop_alert() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = Fleet::start(&FleetOptions {
        robots: 5,
        data_dir: tmp.path().to_path_buf(),
        fleet_public_key: String::new(),
        light: true,
        probation_s: 1,
        cloud_http: "127.0.0.1:0".into(),
        cloud_mqtt: "127.0.0.1:0".into(),
    })
    .await
    .unwrap();
    let service = &fleet.service;
    let http = reqwest::Client::new();
    let url = format!("http://{}/", service.http_addr);
    for k in 0..8 {
        let body = serde_json::json!({"id": format!("live-{k}"), "kind": "pick", "params": {"work_s": 1.0}});
        let r = http.post(format!("{url}api/tasks")).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 201);
    }
    // The robots' own figures: five green, tasks done, latency measured.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let api = loop {
        let api: serde_json::Value = http.get(format!("{url}api/fleet")).send().await.unwrap().json().await.unwrap();
        if api["healthy"] == 5 && api["tasks_completed_today"] == 8 && api["latency_ms"]["p95"].is_number() {
            break api;
        }
        assert!(std::time::Instant::now() < deadline, "the live fleet did not get there: {api:#}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(api["models"], serde_json::json!({"baseline-2": 5}));
    assert_eq!(api["success_rate"], 1.0);
    let live = api["latency_ms"]["p95"].as_f64().unwrap();
    assert!(live > 0.0 && live < 1000.0, "{live}");

    // An e-stop on robot-2: a firing alert, on the page.
    let sim = fleet.robots[2].pipeline().simulator().expect("simulated firmware");
    sim.press_estop();
    wait_for("the e-stop alert from a live robot", Duration::from_secs(40), || {
        service.journal.firing().unwrap().iter().any(|a| a.rule == "robot_estop" && a.subject == "robot-2")
    })
    .await;
    let dom = tokio::task::spawn_blocking({
        let url = url.clone();
        move || browser::dom(&url)
    })
    .await
    .unwrap();
    assert!(dom.contains("data-rule=\"robot_estop\" data-state=\"firing\" data-subject=\"robot-2\""));
    assert_eq!(attr(&dom, "id=\"kpi-tasks\"", "data-value").as_deref(), Some("8"));
    assert_eq!(attr(&dom, "id=\"kpi-success\"", "data-value").as_deref(), Some("1.0000"));
    assert_eq!(attr(&dom, "id=\"kpi-models\"", "data-value").as_deref(), Some("1"));
    assert!(attr(&dom, "id=\"kpi-latency\"", "data-value").is_some_and(|v| v.parse::<f64>().is_ok()));
    assert!(dom.contains("<tr data-robot=\"robot-2\" data-state=\"red\""), "robot-2 red in the grid");
    tokio::task::spawn_blocking(move || screenshot(&url, "fleet-live-5-robots-estop", 1400, 1400)).await.unwrap();

    // Released and reset: the alert resolves.
    sim.release_estop();
    // The firmware reports the release with its next status frame; a reset
    // asked before that would be refused as still pressed, as an operator's.
    let view = fleet.robots[2].view();
    wait_for("the robot sees the button released", Duration::from_secs(20), || !view.pipeline.estop().pressed).await;
    let ticket = view.pipeline.ask_estop_reset();
    let mut outcome = None;
    wait_for("the reset answered", Duration::from_secs(20), || {
        outcome = view.pipeline.reset_answer(ticket);
        outcome.is_some()
    })
    .await;
    assert_eq!(outcome, Some(gantry_edge::pipeline::ResetOutcome::Sent));
    wait_for("the e-stop alert resolved", Duration::from_secs(40), || {
        !service.journal.firing().unwrap().iter().any(|a| a.rule == "robot_estop")
    })
    .await;
    let log = service.journal.entries(0, 100).unwrap();
    assert!(log.iter().any(|e| e.kind == "alert.fired" && e.subject == "robot-2"));
    assert!(log.iter().any(|e| e.kind == "alert.resolved" && e.subject == "robot-2"));
    fleet.stop().await;
}
