//! The technician's status page, rendered on the robot from the same document
//! as `/api/status`: it reads without JavaScript (a `<noscript>` refresh
//! reloads it); with JavaScript it swaps in a fresh copy every second and
//! sends the e-stop reset with the operator's token.

use std::fmt::Write as _;

use serde_json::Value;

use crate::pipeline::LATENCY_BUCKETS_MS;

const SHELL: &str = include_str!("../assets/status.html");

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

fn num(v: &Value, digits: usize) -> String {
    v.as_f64().map_or("–".into(), |x| format!("{x:.digits$}"))
}

fn bytes(v: &Value) -> String {
    let Some(mut b) = v.as_f64() else { return "–".into() };
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut i = 0;
    while b >= 1000.0 && i < units.len() - 1 {
        b /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{b:.0} {}", units[i])
    } else {
        format!("{b:.1} {}", units[i])
    }
}

fn row(out: &mut String, label: &str, id: &str, value: &str) {
    let _ = write!(out, "<tr><td>{}</td><td class=n id=\"{id}\">{value}</td></tr>", esc(label));
}

/// The e-stop in words, and whether the page may offer the reset.
fn estop(e: &Value) -> (String, bool) {
    let known = e["known"].as_bool().unwrap_or(false);
    let pressed = e["pressed"].as_bool().unwrap_or(false);
    let latched = e["latched"].as_bool().unwrap_or(false);
    let fault = e["fault_latched"].as_bool().unwrap_or(false);
    let text = if !known {
        "not reported by the motor controller yet"
    } else if pressed {
        "PRESSED — release it once the cell is safe"
    } else if latched {
        "released, still latched — reset needed"
    } else if fault {
        "motor controller fault latched — reset needed once cleared"
    } else {
        "released"
    };
    (text.to_string(), known && !pressed && (latched || fault))
}

/// The workspace reading in words.
fn workspace(w: &Value) -> String {
    if w["age_ms"].is_null() {
        return "no depth frame yet".into();
    }
    if w["blind"].as_bool().unwrap_or(false) {
        return format!(
            "the depth camera cannot see the work cell ({} pixels without depth)",
            num(&w["invalid_pixels"], 0)
        );
    }
    match (w["nearest_m"].as_f64(), w["stop_distance_m"].as_f64()) {
        (None, _) => "clear: nobody in the work cell".into(),
        (Some(d), Some(stop)) if d < stop => {
            format!("someone {d:.2} m from the arm: stopped (stop distance {stop:.2} m)")
        }
        (Some(d), _) => format!("someone {d:.2} m from the arm: slowed to {} m/s", num(&w["allowed_speed_m_s"], 2)),
    }
}

/// The page for `s` (the `/api/status` document) and the last 10 s of the
/// latency histogram.
pub fn render(s: &Value, recent_latency: &[u64]) -> String {
    let mut m = String::with_capacity(16 * 1024);
    let state = s["state"].as_str().unwrap_or("red");
    let activity = s["activity"].as_str().unwrap_or("unknown");
    let _ = write!(
        m,
        "<header><h1 id=robot>{}</h1><span class=muted>arm <b id=mode>{}</b></span>\
<span class=muted id=model>model {} on {}{}</span><span class=muted id=uptime>up {} h {} min</span></header><div class=grid>",
        esc(s["robot_id"].as_str().unwrap_or("")),
        esc(&match (activity, s["mode"].as_str()) {
            ("running", Some("degraded")) => "running the baseline".to_string(),
            (a, _) => a.to_string(),
        }),
        esc(s["model"]["version"].as_str().unwrap_or("")),
        esc(s["model"]["backend"].as_str().unwrap_or("")),
        if s["model"]["on_baseline"].as_bool().unwrap_or(false) { " (baseline active)" } else { "" },
        (s["uptime_s"].as_f64().unwrap_or(0.0) / 3600.0).floor(),
        (s["uptime_s"].as_f64().unwrap_or(0.0) % 3600.0 / 60.0).floor(),
    );
    // The banner: colour, what the arm does, and why in sentences.
    let _ = write!(
        m,
        "<section id=state class=\"{}\"><div class=big id=state-word>{} · {}</div><ul id=reasons>",
        esc(state),
        esc(state),
        esc(activity)
    );
    let reasons = s["reasons"].as_array().cloned().unwrap_or_default();
    if reasons.is_empty() {
        m.push_str("<li>All checks pass: the arm runs the policy.</li>");
    }
    for r in &reasons {
        let _ = write!(m, "<li>{}</li>", esc(r.as_str().unwrap_or("")));
    }
    m.push_str("</ul>");
    if let Some(task) = s["task"].as_str() {
        let done = 100.0 * s["task_progress"].as_f64().unwrap_or(0.0);
        let _ = write!(m, "<p id=task>Task {} · {done:.0} % done</p>", esc(task));
    }
    m.push_str("</section>");

    // The e-stop row, with the reset the fail-closed governor allows.
    let (estop_text, resettable) = estop(&s["estop"]);
    let over_http = s["estop"]["reset_over_http"].as_bool().unwrap_or(false);
    let control = if !resettable {
        String::new()
    } else if over_http {
        "<button id=estop-reset type=button>Reset e-stop</button> <span class=muted>asks for the operator token; the arm stays still until the policy sends a fresh action</span>".into()
    } else {
        "<span class=muted>reset on the robot: <code>gantry-edge estop-reset --config FILE</code> (no operator token is configured for this page)</span>".into()
    };
    let _ = write!(
        m,
        "<section id=estop-row class=\"{}\"><h2>E-stop</h2><p><b id=estop>{}</b> {control} <span id=estop-result class=muted></span></p>\
<p class=muted>{} presses · {} resets since start</p></section>",
        if resettable || s["estop"]["pressed"].as_bool().unwrap_or(false) { "alarm" } else { "" },
        esc(&estop_text),
        num(&s["estop"]["presses"], 0),
        num(&s["estop"]["resets"], 0),
    );
    let _ = write!(m, "<section><h2>Workspace</h2><p id=workspace>{}</p></section>", esc(&workspace(&s["workspace"])));

    // Latency over the last 10 s.
    let l = &s["loop"];
    let max = recent_latency.iter().copied().max().unwrap_or(0).max(1);
    m.push_str("<section><h2>Frame-to-command latency (last 10 s)</h2><div class=bars id=bars>");
    for (i, n) in recent_latency.iter().enumerate() {
        let label = LATENCY_BUCKETS_MS.get(i).map_or("more".to_string(), |le| format!("≤ {le} ms"));
        let _ = write!(
            m,
            "<div style=\"height:{:.0}%\" title=\"{label}: {n} frames\"></div>",
            100.0 * *n as f64 / max as f64
        );
    }
    m.push_str("</div><div class=labels>");
    for i in 0..recent_latency.len() {
        let label = LATENCY_BUCKETS_MS.get(i).map_or(">".to_string(), |le| format!("≤{le}"));
        let _ = write!(m, "<span>{label}</span>");
    }
    m.push_str("</div><table>");
    row(
        &mut m,
        "p50 / p99 / max",
        "lat",
        &format!(
            "{} / {} / {} ms",
            num(&l["latency_ms"]["p50"], 1),
            num(&l["latency_ms"]["p99"], 1),
            num(&l["latency_ms"]["max"], 1)
        ),
    );
    row(
        &mut m,
        "control loop",
        "rate",
        &format!(
            "{} Hz, jitter p99 {} µs{}",
            num(&l["rate_hz"], 1),
            num(&l["jitter_us"]["p99"], 0),
            if l["realtime"].as_bool().unwrap_or(false) { "" } else { " (no RT)" }
        ),
    );
    row(
        &mut m,
        "deadline misses / fallbacks",
        "misses",
        &format!("{} / {}", num(&l["deadline_misses"], 0), num(&l["fallbacks"], 0)),
    );
    m.push_str("</table></section>");

    // The governor and its recent incidents, grouped, in words.
    let g = &s["governor"];
    let _ = write!(
        m,
        "<section class=wide><h2>Safety governor</h2><p>{} commands checked, <span id=rejects>{}</span> refused since start.</p><table id=incidents>",
        num(&g["checks"], 0),
        num(&g["rejects"], 0)
    );
    let groups = g["incident_groups"].as_array().cloned().unwrap_or_default();
    if groups.is_empty() {
        m.push_str("<tr><td class=muted>No command refused recently.</td></tr>");
    } else {
        m.push_str("<tr><th>what happened</th><th>times</th><th>last</th><th>last value / limit</th></tr>");
    }
    for i in &groups {
        let value = esc(i["reading"].as_str().unwrap_or("–"));
        let _ = write!(
            m,
            "<tr class=\"{}\" data-check=\"{}\"><td>{}</td><td class=n>{}</td><td class=n>{} s ago</td><td class=n>{value}</td></tr>",
            if i["fault"].as_bool().unwrap_or(false) { "fault" } else { "" },
            esc(i["check"].as_str().unwrap_or("")),
            esc(i["meaning"].as_str().unwrap_or("")),
            num(&i["count"], 0),
            num(&i["last_age_s"], 0),
        );
    }
    m.push_str("</table></section>");

    // Health.
    let h = &s["health"];
    m.push_str("<section><h2>Health</h2><table>");
    row(
        &mut m,
        "CPU",
        "cpu",
        &format!("{} % (daemon {} % of a core)", num(&h["cpu_pct"], 0), num(&h["process_cpu_pct"], 0)),
    );
    row(&mut m, "memory", "mem", &format!("{} of {}", bytes(&h["mem_used_bytes"]), bytes(&h["mem_total_bytes"])));
    row(
        &mut m,
        "GPU",
        "gpu",
        &if h["gpu_pct"].is_null() { "none".into() } else { format!("{} %", num(&h["gpu_pct"], 0)) },
    );
    row(
        &mut m,
        "firmware link",
        "link",
        if s["firmware"]["link_alive"].as_bool().unwrap_or(false) { "alive" } else { "DOWN" },
    );
    let temps: Vec<String> = h["motor_temp_c"].as_array().map_or(Vec::new(), |t| t.iter().map(|v| num(v, 0)).collect());
    row(
        &mut m,
        "motor temperatures",
        "temps",
        &if temps.is_empty() { "–".into() } else { format!("{} °C", temps.join(" · ")) },
    );
    row(
        &mut m,
        "gripper pressure",
        "pressure",
        &if h["gripper_pressure_kpa"].is_null() {
            "–".into()
        } else {
            format!("{} kPa", num(&h["gripper_pressure_kpa"], 0))
        },
    );
    m.push_str("</table></section>");

    // Disk and sync.
    let r = &s["recorder"];
    let sync = &s["sync"];
    let u = &sync["uploads"];
    let ro = &s["model"]["rollout"];
    let used = match (h["disk_free_bytes"].as_f64(), h["disk_total_bytes"].as_f64()) {
        (Some(f), Some(t)) if t > 0.0 => 100.0 * (1.0 - f / t),
        _ => 0.0,
    };
    let _ = write!(
        m,
        "<section><h2>Disk and sync</h2><div class=meter><div style=\"width:{used:.0}%\"></div></div><table>"
    );
    row(&mut m, "disk free", "disk", &format!("{} of {}", bytes(&h["disk_free_bytes"]), bytes(&h["disk_total_bytes"])));
    row(&mut m, "recorded today", "today", &bytes(&r["bytes_today"]));
    row(&mut m, "not yet synced", "unsynced", &bytes(&r["unsynced_bytes"]));
    row(
        &mut m,
        "images",
        "images",
        &format!("{} ({})", num(&r["images"], 0), esc(r["image_level"].as_str().unwrap_or(""))),
    );
    row(
        &mut m,
        "cloud",
        "cloud",
        if sync["connected"].as_bool().unwrap_or(false) { "connected" } else { "unreachable, keeping data locally" },
    );
    let broker = esc(sync["broker"].as_str().unwrap_or(""));
    let route = match sync["route"].as_u64().unwrap_or(0) {
        0 => format!("primary · {broker}"),
        n => format!("backup {n} · {broker} (the primary failed; returns when it answers)"),
    };
    row(&mut m, "route", "route", &route);
    row(&mut m, "sync backlog", "backlog", &format!("{} batches", num(&sync["backlog"], 0)));
    row(
        &mut m,
        "bulk upload",
        "uploads",
        &format!(
            "{}{} segments, {}",
            if u["window_open"].as_bool().unwrap_or(false) { "window open · " } else { "waiting for its window · " },
            num(&u["segments"], 0),
            bytes(&u["bytes"])
        ),
    );
    row(
        &mut m,
        "model rollout",
        "rollout",
        &esc(&format!(
            "{}{}{}",
            ro["state"].as_str().unwrap_or(""),
            ro["assigned"].as_str().map_or(String::new(), |a| format!(" {a}")),
            ro["reason"].as_str().map_or(String::new(), |r| format!(": {r}"))
        )),
    );
    m.push_str("</table></section></div>");
    SHELL
        .replace("{{robot_id}}", &esc(s["robot_id"].as_str().unwrap_or("")))
        .replace("{{state}}", &esc(state))
        .replace("{{main}}", &m)
}
