//! The operator's fleet page (`GET /`), rendered on the server so that it
//! reads without JavaScript: headline figures against their targets, alerts,
//! the robot grid (filter, search and sort are plain GET parameters), 7-day
//! trends as inline SVG, today's failure modes, models beside their live
//! success, the task form and the incident log. A small script re-fetches the
//! page every 5 s and swaps the content in (never while a form is in use).
//! No external assets.

use std::fmt::Write as _;

use serde::Deserialize;

use crate::fleet::{RobotLine, Snapshot, TrendPoint};
use crate::ops::{Alert, Entry};
use crate::tasks::Task;

/// The grid's filter and order, from the query string.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct GridQuery {
    /// `green`, `amber`, `red`, `offline`, `unknown`, or `problem` (anything not green).
    pub state: String,
    pub model: String,
    pub site: String,
    /// Substring of the robot id, task or an error.
    pub q: String,
    /// A column: `robot`, `state`, `mode`, `model`, `site`, `task`, `latency`, `rtt`, `disk`, `done`, `failed`, `seen`.
    pub sort: String,
    pub desc: bool,
    /// Set by the task form's answer: what happened, shown once.
    pub note: String,
}

pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn pct(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{:.1} %", 100.0 * v))
}

fn ms(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.1} ms"))
}

fn utc(unix_ns: u64) -> String {
    if unix_ns == 0 {
        return "never".into();
    }
    let t = gantry_config::task::rfc3339(unix_ns);
    t.get(..19).unwrap_or(&t).replace('T', " ")
}

fn filtered<'a>(lines: &'a [RobotLine], q: &GridQuery) -> Vec<&'a RobotLine> {
    let needle = q.q.trim().to_lowercase();
    let mut rows: Vec<&RobotLine> = lines
        .iter()
        .filter(|l| match q.state.as_str() {
            "" => true,
            "problem" => l.state != "green",
            s => l.state == s,
        })
        .filter(|l| q.model.is_empty() || l.model_version.as_deref() == Some(q.model.as_str()))
        .filter(|l| q.site.is_empty() || l.site == q.site)
        .filter(|l| {
            needle.is_empty()
                || l.robot_id.to_lowercase().contains(&needle)
                || l.task.as_deref().is_some_and(|t| t.to_lowercase().contains(&needle))
                || l.errors.iter().any(|e| e.to_lowercase().contains(&needle))
        })
        .collect();
    let severity = |s: &str| match s {
        "red" => 0,
        "offline" => 1,
        "amber" => 2,
        "unknown" => 3,
        _ => 4,
    };
    let num = |v: Option<f64>| v.unwrap_or(f64::NEG_INFINITY);
    match q.sort.as_str() {
        "robot" => rows.sort_by(|a, b| a.robot_id.cmp(&b.robot_id)),
        "mode" => rows.sort_by(|a, b| a.mode.cmp(&b.mode).then(a.robot_id.cmp(&b.robot_id))),
        "model" => rows.sort_by(|a, b| a.model_version.cmp(&b.model_version).then(a.robot_id.cmp(&b.robot_id))),
        "site" => rows.sort_by(|a, b| a.site.cmp(&b.site).then(a.robot_id.cmp(&b.robot_id))),
        "task" => rows.sort_by(|a, b| a.task.cmp(&b.task).then(a.robot_id.cmp(&b.robot_id))),
        "latency" => rows.sort_by(|a, b| num(a.latency_p95_ms).total_cmp(&num(b.latency_p95_ms))),
        "rtt" => rows.sort_by(|a, b| num(a.net_rtt_ms).total_cmp(&num(b.net_rtt_ms))),
        "disk" => rows.sort_by(|a, b| num(a.disk_free_pct).total_cmp(&num(b.disk_free_pct))),
        "done" => rows.sort_by_key(|l| l.completed_today),
        "failed" => rows.sort_by_key(|l| l.failed_today),
        "seen" => rows.sort_by_key(|l| l.last_seen_unix_ns),
        // Default: what needs a look first.
        _ => rows.sort_by(|a, b| severity(&a.state).cmp(&severity(&b.state)).then(a.robot_id.cmp(&b.robot_id))),
    }
    if q.desc {
        rows.reverse();
    }
    rows
}

/// A headline figure: value, target, and whether it meets it.
fn kpi(out: &mut String, id: &str, title: &str, value: &str, data: &str, detail: &str, ok: Option<bool>) {
    let class = match ok {
        Some(true) => "kpi ok",
        Some(false) => "kpi bad",
        None => "kpi",
    };
    let _ = write!(
        out,
        "<div class=\"{class}\" id=\"{id}\" data-value=\"{}\"><h3>{}</h3><p class=big>{}</p><p class=sub>{detail}</p></div>",
        esc(data),
        esc(title),
        esc(value)
    );
}

/// A plotted series: name, CSS class, and its value at a point.
type Series<'a> = (&'a str, &'a str, fn(&TrendPoint) -> Option<f64>);

/// A 7-day line plot of `series` (values 0..max), one point per hour.
fn plot(
    id: &str,
    title: &str,
    points: &[TrendPoint],
    now_unix_s: u64,
    series: &[Series<'_>],
    max: f64,
    unit: &str,
) -> String {
    const W: f64 = 560.0;
    const H: f64 = 140.0;
    let start = now_unix_s.saturating_sub(crate::fleet::TREND_DAYS * 86_400) as f64;
    let span = (crate::fleet::TREND_DAYS * 86_400) as f64;
    let mut svg = format!(
        "<figure id=\"{id}\"><figcaption>{}</figcaption><svg viewBox=\"0 0 {W} {}\" width=\"{W}\" height=\"{}\" role=img aria-label=\"{}\">",
        esc(title),
        H + 20.0,
        H + 20.0,
        esc(title)
    );
    for frac in [0.0, 0.5, 1.0] {
        let y = H - frac * H + 5.0;
        let _ = write!(
            svg,
            "<line x1=40 x2={W} y1={y:.1} y2={y:.1} class=grid /><text x=0 y={:.1} class=axis>{}{unit}</text>",
            y + 4.0,
            fmt_axis(frac * max)
        );
    }
    for day in 0..=crate::fleet::TREND_DAYS {
        let x = 40.0 + (W - 40.0) * (day as f64 / crate::fleet::TREND_DAYS as f64);
        let _ = write!(svg, "<line x1={x:.1} x2={x:.1} y1=5 y2={:.1} class=grid />", H + 5.0);
    }
    let mut n = 0;
    for (name, class, get) in series {
        let pts: Vec<String> = points
            .iter()
            .filter_map(|p| {
                let v = get(p)?;
                let x = 40.0 + (W - 40.0) * ((p.hour_unix_s as f64 - start) / span).clamp(0.0, 1.0);
                let y = H - (v / max).clamp(0.0, 1.0) * H + 5.0;
                Some(format!("{x:.1},{y:.1}"))
            })
            .collect();
        n += pts.len();
        if pts.len() == 1 {
            let (x, y) = pts[0].split_once(',').unwrap_or(("0", "0"));
            let _ = write!(svg, "<circle cx={x} cy={y} r=3 class=\"{class}\"><title>{}</title></circle>", esc(name));
        } else if !pts.is_empty() {
            let _ = write!(
                svg,
                "<polyline points=\"{}\" class=\"{class}\"><title>{}</title></polyline>",
                pts.join(" "),
                esc(name)
            );
        }
    }
    svg.push_str("</svg>");
    let legend: Vec<String> =
        series.iter().map(|(name, class, _)| format!("<span class=\"key {class}\">{}</span>", esc(name))).collect();
    let _ = write!(svg, "<p class=sub>{} · {} hourly points · last 7 days (UTC)</p></figure>", legend.join(" "), n);
    svg
}

fn fmt_axis(v: f64) -> String {
    if v >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

pub struct Page<'a> {
    pub snap: &'a Snapshot,
    pub trends: &'a [TrendPoint],
    pub alerts: &'a [Alert],
    pub incidents: &'a [Entry],
    pub open_tasks: &'a [&'a Task],
    pub query: &'a GridQuery,
    pub kinds: Vec<String>,
}

pub fn render(p: &Page<'_>) -> String {
    let s = p.snap;
    let t = &s.targets;
    let mut out = String::with_capacity(64 * 1024 + s.lines.len() * 400);
    let firing: Vec<&Alert> = p.alerts.iter().filter(|a| a.state == "firing").collect();
    let _ = write!(
        out,
        "<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport content=\"width=device-width\">\
<title>Gantry fleet{}</title><style>{CSS}</style></head><body><main id=main>\
<header><h1>Gantry fleet</h1><p class=sub>{} robots · updated <time id=updated>{} UTC</time> · \
<a href=\"#alerts\" class=\"{}\">{} alert(s) firing</a></p></header>",
        if firing.is_empty() { String::new() } else { format!(" — {} alert(s)", firing.len()) },
        s.robots,
        utc(s.unix_ns),
        if firing.is_empty() { "calm" } else { "loud" },
        firing.len()
    );
    if !p.query.note.is_empty() {
        let _ = write!(out, "<p class=note role=status>{}</p>", esc(&p.query.note));
    }
    // Headline figures.
    out.push_str("<section class=kpis aria-label=\"headline figures\">");
    let finished = s.tasks_completed_today + s.tasks_failed_today;
    kpi(
        &mut out,
        "kpi-success",
        "Task success today",
        &pct(s.success_rate),
        &s.success_rate.map_or(String::new(), |v| format!("{v:.4}")),
        &format!("{} of {finished} finished · target {}", s.tasks_completed_today, pct(Some(t.success_rate_target))),
        s.success_rate.map(|v| v >= t.success_rate_target),
    );
    let healthy_share = (s.robots > 0).then(|| s.healthy as f64 / s.robots as f64);
    kpi(
        &mut out,
        "kpi-healthy",
        "Healthy robots",
        &format!("{} of {}", s.healthy, s.robots),
        &s.healthy.to_string(),
        &format!(
            "<span class=amber>{} amber</span> · <span class=red>{} red</span> · <span class=offline>{} offline</span> · target {}",
            s.amber,
            s.red,
            s.offline,
            pct(Some(t.healthy_target))
        ),
        healthy_share.map(|v| v >= t.healthy_target),
    );
    kpi(
        &mut out,
        "kpi-tasks",
        "Tasks completed today",
        &s.tasks_completed_today.to_string(),
        &s.tasks_completed_today.to_string(),
        &format!("{} failed · {} queued · {} in progress", s.tasks_failed_today, s.tasks_queued, s.tasks_running),
        None,
    );
    kpi(
        &mut out,
        "kpi-latency",
        "Frame-to-command latency",
        &format!("p95 {}", ms(s.latency_p95_ms)),
        &s.latency_p95_ms.map_or(String::new(), |v| format!("{v:.3}")),
        &format!("mean {} · target p95 ≤ {:.0} ms", ms(s.latency_mean_ms), t.latency_p95_target_ms),
        s.latency_p95_ms.map(|v| v <= t.latency_p95_target_ms),
    );
    let online = s.online.max(1) as f64;
    let models: Vec<String> =
        s.models.iter().map(|(v, n)| format!("{} {:.0} %", esc(v), 100.0 * *n as f64 / online)).collect();
    kpi(
        &mut out,
        "kpi-models",
        "Models in use",
        &s.models.len().to_string(),
        &s.models.len().to_string(),
        &if models.is_empty() { "no robot online".into() } else { models.join(" · ") },
        None,
    );
    out.push_str("</section>");

    // Alerts.
    let _ = write!(out, "<section id=alerts><h2>Alerts</h2>");
    if p.alerts.is_empty() {
        out.push_str("<p class=sub>No alerts.</p>");
    } else {
        out.push_str("<table><thead><tr><th>state</th><th>severity</th><th>rule</th><th>subject</th><th>since</th><th>resolved</th><th>what</th><th>what was done</th></tr></thead><tbody>");
        for a in p.alerts.iter().take(50) {
            // The automatic and operators' actions on the alert's subject while it fired.
            let until = a.resolved_unix_ns.unwrap_or(u64::MAX);
            let done: Vec<String> = p
                .incidents
                .iter()
                .filter(|e| {
                    !e.kind.starts_with("alert.")
                        && (e.subject == a.subject || a.robot_id.as_deref() == Some(e.subject.as_str()))
                        && (a.since_unix_ns..=until).contains(&e.unix_ns)
                })
                .map(|e| format!("{} {}", utc(e.unix_ns).get(11..).unwrap_or(""), esc(&e.message)))
                .collect();
            let done = if done.is_empty() { "–".to_string() } else { done.join("<br>") };
            let _ = write!(
                out,
                "<tr class=\"alert {}\" data-rule=\"{}\" data-state=\"{}\" data-subject=\"{}\"><td>{}</td><td class=\"sev-{}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=done>{done}</td></tr>",
                esc(&a.state),
                esc(&a.rule),
                esc(&a.state),
                esc(&a.subject),
                esc(&a.state),
                esc(&a.severity),
                esc(&a.severity),
                esc(&a.rule.replace('_', " ")),
                esc(&a.subject),
                utc(a.since_unix_ns),
                a.resolved_unix_ns.map_or("–".into(), utc),
                esc(&a.message)
            );
        }
        out.push_str("</tbody></table>");
    }
    out.push_str("</section>");

    // The robot grid.
    let rows = filtered(&s.lines, p.query);
    let mut sites: Vec<&str> = s.lines.iter().map(|l| l.site.as_str()).filter(|v| !v.is_empty()).collect();
    sites.sort_unstable();
    sites.dedup();
    let option = |value: &str, label: &str, current: &str| {
        format!(
            "<option value=\"{}\"{}>{}</option>",
            esc(value),
            if value == current { " selected" } else { "" },
            esc(label)
        )
    };
    let mut state_opts = option("", "any state", &p.query.state);
    for v in ["problem", "green", "amber", "red", "offline", "unknown"] {
        state_opts.push_str(&option(v, if v == "problem" { "not green" } else { v }, &p.query.state));
    }
    let mut model_opts = option("", "any model", &p.query.model);
    for v in s.models.keys() {
        model_opts.push_str(&option(v, v, &p.query.model));
    }
    let mut site_opts = option("", "any site", &p.query.site);
    for v in &sites {
        site_opts.push_str(&option(v, v, &p.query.site));
    }
    let _ = write!(
        out,
        "<section id=robots><h2>Robots</h2><form method=get action=\"/#robots\" class=filters>\
<label>State <select name=state>{state_opts}</select></label> <label>Model <select name=model>{model_opts}</select></label> \
<label>Site <select name=site>{site_opts}</select></label> <label>Search <input name=q value=\"{}\" placeholder=\"robot, task or error\"></label> \
<input type=hidden name=sort value=\"{}\"><button>Show</button> <a href=\"/#robots\">clear</a></form>\
<p class=sub id=grid-count data-shown=\"{}\" data-total=\"{}\">{} of {} robots</p>",
        esc(&p.query.q),
        esc(&p.query.sort),
        rows.len(),
        s.lines.len(),
        rows.len(),
        s.lines.len()
    );
    let head = |key: &str, label: &str| {
        let desc = p.query.sort == key && !p.query.desc;
        let mark = if p.query.sort == key {
            if p.query.desc {
                " ▼"
            } else {
                " ▲"
            }
        } else {
            ""
        };
        format!(
            "<th><a href=\"/?state={}&amp;model={}&amp;site={}&amp;q={}&amp;sort={key}&amp;desc={desc}#robots\">{label}{mark}</a></th>",
            enc(&p.query.state),
            enc(&p.query.model),
            enc(&p.query.site),
            enc(&p.query.q)
        )
    };
    out.push_str("<table id=grid><thead><tr>");
    for (k, l) in [
        ("robot", "robot"),
        ("state", "state"),
        ("mode", "mode"),
        ("site", "site"),
        ("model", "model"),
        ("task", "task"),
        ("latency", "latency p95"),
        ("rtt", "network"),
        ("disk", "disk free"),
        ("done", "done today"),
        ("failed", "failed today"),
        ("seen", "last heard"),
    ] {
        out.push_str(&head(k, l));
    }
    out.push_str("</tr></thead><tbody>");
    for l in rows {
        let task = match (&l.task, l.progress) {
            (Some(t), Some(pr)) => format!("{} {:.0} %", esc(t), 100.0 * pr),
            _ => "idle".into(),
        };
        let _ = write!(
            out,
            "<tr data-robot=\"{}\" data-state=\"{}\"><td>{}</td><td class=\"st {}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{task}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td>{}</td></tr>",
            esc(&l.robot_id),
            esc(&l.state),
            esc(&l.robot_id),
            esc(&l.state),
            esc(&l.state),
            esc(&l.mode.replace('_', " ")),
            esc(&l.site),
            esc(l.model_version.as_deref().unwrap_or("–")),
            ms(l.latency_p95_ms),
            ms(l.net_rtt_ms),
            l.disk_free_pct.map_or("–".into(), |v| format!("{v:.0} %")),
            l.completed_today,
            l.failed_today,
            utc(l.last_seen_unix_ns)
        );
    }
    out.push_str("</tbody></table></section>");

    // Trends and failure modes.
    let now_s = s.unix_ns / 1_000_000_000;
    out.push_str("<section id=trends><h2>Last 7 days</h2><div class=plots>");
    out.push_str(&plot(
        "trend-success",
        "Task success rate",
        p.trends,
        now_s,
        &[("success", "s1", |p| p.success_rate.map(|v| v * 100.0))],
        100.0,
        " %",
    ));
    let lat_max = p.trends.iter().filter_map(|p| p.latency_p95_ms).fold(t.latency_p95_target_ms, f64::max).max(1.0);
    out.push_str(&plot(
        "trend-latency",
        "Frame-to-command latency",
        p.trends,
        now_s,
        &[("p95", "s2", |p| p.latency_p95_ms), ("mean", "s1", |p| p.latency_mean_ms)],
        lat_max,
        " ms",
    ));
    out.push_str(&plot(
        "trend-healthy",
        "Healthy robots",
        p.trends,
        now_s,
        &[("healthy", "s3", |p| p.healthy.map(|v| v * 100.0))],
        100.0,
        " %",
    ));
    out.push_str("</div></section>");
    out.push_str("<section id=failures><h2>Top failure modes today</h2>");
    if s.top_failures.is_empty() {
        out.push_str("<p class=sub>No task failed today.</p>");
    } else {
        out.push_str("<table><thead><tr><th>reason</th><th>tasks</th></tr></thead><tbody>");
        for (reason, n) in &s.top_failures {
            let _ = write!(
                out,
                "<tr data-reason=\"{}\"><td>{}</td><td class=n>{n}</td></tr>",
                esc(reason),
                esc(&reason.replace('_', " "))
            );
        }
        out.push_str("</tbody></table>");
    }
    out.push_str("</section>");

    // Models.
    out.push_str("<section id=models><h2>Models</h2><table><thead><tr><th>version</th><th>status</th><th>robots</th><th>published with</th><th>live success (24 h)</th></tr></thead><tbody>");
    for m in &s.model_lines {
        let metrics = match &m.metrics {
            serde_json::Value::Object(o) if !o.is_empty() => {
                o.iter().map(|(k, v)| format!("{}: {}", esc(k), esc(&v.to_string()))).collect::<Vec<_>>().join("<br>")
            }
            _ => "–".into(),
        };
        let _ = write!(
            out,
            "<tr data-model=\"{}\"><td>{}</td><td>{}</td><td class=n>{} ({:.0} %)</td><td class=metrics>{metrics}</td><td class=n>{} of {} attempts</td></tr>",
            esc(&m.version),
            esc(&m.version),
            esc(&m.status),
            m.robots,
            100.0 * m.share,
            pct(m.success_rate),
            m.attempts
        );
    }
    out.push_str("</tbody></table></section>");

    // Tasks: the form and what is open.
    let mut kind_opts = String::new();
    for k in &p.kinds {
        kind_opts.push_str(&option(k, k, ""));
    }
    let _ = write!(
        out,
        "<section id=tasks><h2>Tasks</h2><form method=post action=\"/ui/tasks\" class=taskform>\
<label>Kind <input name=kind list=kinds required pattern=\"[A-Za-z0-9_-]{{1,64}}\"><datalist id=kinds>{kind_opts}</datalist></label> \
<label>Priority <select name=priority><option value=normal>normal</option><option value=high>high</option><option value=urgent>urgent</option></select></label> \
<label>Params (JSON) <input name=params placeholder=\"{{}}\"></label> \
<label>Your name <input name=operator required maxlength=64></label> <button>Submit task</button></form>"
    );
    if p.open_tasks.is_empty() {
        out.push_str("<p class=sub>No open tasks.</p>");
    } else {
        let _ = write!(out, "<p class=sub>{} open task(s), the first 200:</p><table><thead><tr><th>task</th><th>kind</th><th>priority</th><th>state</th><th>robot</th><th>attempts</th><th></th></tr></thead><tbody>", p.open_tasks.len());
        for task in p.open_tasks.iter().take(200) {
            let _ = write!(
                out,
                "<tr data-task=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=n>{}</td><td><form method=post action=\"/ui/tasks/{}/cancel\"><input name=operator required maxlength=64 size=10 placeholder=\"your name\" aria-label=\"your name\"> <button class=small>Cancel</button></form></td></tr>",
                esc(&task.id),
                esc(&task.id),
                esc(&task.kind),
                task.priority.as_str(),
                task.state.as_str(),
                esc(task.robot_id.as_deref().unwrap_or("–")),
                task.attempts,
                enc(&task.id)
            );
        }
        out.push_str("</tbody></table>");
    }
    out.push_str("</section>");

    // The incident log.
    out.push_str("<section id=incidents><h2>Incident log</h2>");
    if p.incidents.is_empty() {
        out.push_str("<p class=sub>Nothing logged yet.</p>");
    } else {
        out.push_str("<table><thead><tr><th>when (UTC)</th><th>what</th><th>subject</th><th>who</th><th>details</th></tr></thead><tbody>");
        for e in p.incidents {
            let _ = write!(
                out,
                "<tr data-kind=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&e.kind),
                utc(e.unix_ns),
                esc(&e.kind),
                esc(&e.subject),
                esc(&e.who),
                esc(&e.message)
            );
        }
        out.push_str("</tbody></table>");
    }
    out.push_str("</section></main>");
    out.push_str(SCRIPT);
    out.push_str("</body></html>");
    out
}

/// Percent-encodes a query value.
fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

const CSS: &str = "body{font:14px system-ui,sans-serif;margin:0;color:#202124;background:#f6f7f9}\
main{padding:1rem 1.5rem;max-width:1500px}h1{margin:.2rem 0;font-size:1.5rem}h2{font-size:1.1rem;margin:1.4rem 0 .4rem}\
h3{margin:0;font-size:.85rem;color:#5f6368;font-weight:600}.sub{color:#5f6368;margin:.2rem 0}\
.kpis{display:grid;grid-template-columns:repeat(auto-fit,minmax(220px,1fr));gap:.8rem}\
.kpi{background:#fff;border-radius:8px;padding:.7rem 1rem;border-left:6px solid #bdc1c6}\
.kpi.ok{border-left-color:#1e8e3e}.kpi.bad{border-left-color:#d93025}.big{font-size:1.7rem;font-weight:650;margin:.2rem 0}\
table{border-collapse:collapse;background:#fff;width:100%}td,th{padding:.25rem .6rem;border-bottom:1px solid #e8eaed;text-align:left}\
th a{color:inherit}.n{text-align:right;font-variant-numeric:tabular-nums}\
.st.green,.green{color:#1e8e3e;font-weight:600}.st.amber,.amber{color:#b06000;font-weight:600}.st.red,.red{color:#d93025;font-weight:600}\
.st.offline,.offline{color:#5f6368;font-weight:600}.st.unknown{color:#5f6368}\
tr.alert.firing{background:#fce8e6}.sev-critical{color:#d93025;font-weight:700}.sev-warning{color:#b06000;font-weight:600}\
a.loud{color:#d93025;font-weight:700}.filters label,.taskform label{margin-right:.6rem}\
.plots{display:flex;flex-wrap:wrap;gap:1rem}figure{margin:0;background:#fff;padding:.5rem;border-radius:8px}\
figcaption{font-weight:600}svg .grid{stroke:#e8eaed}svg .axis{font-size:10px;fill:#5f6368}\
svg polyline{fill:none;stroke-width:2}svg .s1{stroke:#1a73e8;fill:#1a73e8}svg .s2{stroke:#d93025;fill:#d93025}svg .s3{stroke:#1e8e3e;fill:#1e8e3e}\
svg polyline.s1,svg polyline.s2,svg polyline.s3{fill:none}.key.s1{color:#1a73e8}.key.s2{color:#d93025}.key.s3{color:#1e8e3e}\
.note{background:#e6f4ea;padding:.4rem .8rem;border-radius:6px}.metrics{font-size:.85rem}";

/// Live updates: the page itself, fetched again and swapped in. Skipped while
/// a form field has focus, so nobody's typing is lost. The render time is
/// noted on the root element for the test browser.
const SCRIPT: &str = "<script>(function(){\
var t0=performance.now();addEventListener('load',function(){var n=performance.getEntriesByType('navigation')[0];\
document.documentElement.dataset.renderMs=String(Math.round((n?n.loadEventStart:performance.now()-t0)));});\
function busy(){var a=document.activeElement;return a&&a.form;}\
setInterval(function(){if(busy()||document.hidden)return;fetch(location.href,{cache:'no-store'}).then(function(r){return r.ok?r.text():null}).then(function(h){\
if(!h||busy())return;var d=new DOMParser().parseFromString(h,'text/html');var m=d.getElementById('main');\
if(m){document.getElementById('main').replaceWith(m);document.title=d.title;}}).catch(function(){});},5000);})();</script>";
