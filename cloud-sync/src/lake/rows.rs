//! A stored log batch, parsed, becomes rows of the lake's tables, each with
//! its own quality flags (`quality.rs`).

use std::collections::BTreeMap;

use super::schema::{self, Mismatch, Rows, Table, V};
use crate::quality::{self, Limits, Parsed};
use crate::store::StoredSegment;

/// Rows of every table, by (table, date, robot).
pub type Partitions = BTreeMap<(&'static str, String, String), Rows>;

/// The key of an image in the `images` table, by which `frames` and
/// `samples` refer to it: unique because a boot records one image of each
/// kind per frame.
pub fn image_id(robot: &str, boot: &str, frame_seq: u64, kind: &str) -> String {
    format!("{robot}/{boot}/{frame_seq}/{kind}")
}

pub fn date_of(unix_ns: u64) -> String {
    let (y, m, d) = gantry_config::wire::civil_from_days((unix_ns / gantry_config::wire::DAY_NS) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The rows of `table` in the partition of `unix_ns` and `robot`.
pub(super) fn rows<'a>(parts: &'a mut Partitions, table: &'static Table, unix_ns: u64, robot: &str) -> &'a mut Rows {
    parts.entry((table.name, date_of(unix_ns), robot.to_string())).or_insert_with(|| Rows::new(table))
}

/// Flags of a row: its own, then the batch-wide ones, sorted and unique.
pub(super) fn flags(own: Vec<&'static str>, batch: &[&'static str]) -> Vec<String> {
    let mut f: Vec<&str> = own.into_iter().chain(batch.iter().copied()).collect();
    f.sort_unstable();
    f.dedup();
    f.into_iter().map(String::from).collect()
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// How long a health snapshot speaks for: the stretch before it (the robot
/// reports every 30 s).
const HEALTH_COVERS_NS: u64 = 30_000_000_000;

/// Adds one batch's rows. Flags that cannot be pinned on a row go on every
/// row they may concern: damaged chunks on all, a corrupt video on frames
/// and tasks.
pub fn add_batch(
    parts: &mut Partitions,
    b: &StoredSegment,
    p: &Parsed,
    limits: &Limits,
    reviews: &mut Vec<super::review::ReviewItem>,
) -> Result<(), Mismatch> {
    let robot = b.robot_id.as_str();
    // Lost messages could have been anyone's; a bad image concerns frames
    // and the task they served.
    let mut batch_wide = Vec::new();
    if p.unparsed > 0 || p.damaged_chunks > 0 {
        batch_wide.push(quality::MALFORMED);
    }
    let mut video_wide = batch_wide.clone();
    if !quality::video_ok(p) {
        video_wide.push(quality::VIDEO);
    }
    // Every row's own flags first: a task gathers those inside it.
    let action_flags: Vec<Vec<&'static str>> = p
        .control
        .iter()
        .enumerate()
        .map(|(i, c)| quality::action_flags(c, i.checked_sub(1).map(|j| &p.control[j]), limits))
        .collect();
    let joint_flags: Vec<Vec<&'static str>> = p
        .joints
        .iter()
        .enumerate()
        .map(|(i, j)| quality::joint_state_flags(j, i.checked_sub(1).map(|k| &p.joints[k])))
        .collect();
    let frame_flags: Vec<Vec<&'static str>> = p
        .frames
        .iter()
        .enumerate()
        .map(|(i, f)| quality::frame_flags(f, i.checked_sub(1).map(|k| &p.frames[k])))
        .collect();
    let health_flags: Vec<Vec<&'static str>> = p.health.iter().map(|h| quality::health_flags(h, limits)).collect();
    let health_time = |h: &serde_json::Value| h["unix_ns"].as_u64().unwrap_or(b.start_unix_ns);

    for e in &p.episodes {
        let span = e.start_unix_ns..=e.end_unix_ns;
        let mut own = quality::episode_flags(e, &p.incidents);
        let inside = |t: u64| span.contains(&t);
        own.extend(p.control.iter().zip(&action_flags).filter(|(c, _)| inside(c.unix_ns)).flat_map(|(_, f)| f));
        own.extend(p.joints.iter().zip(&joint_flags).filter(|(j, _)| inside(j.unix_ns)).flat_map(|(_, f)| f));
        own.extend(p.frames.iter().zip(&frame_flags).filter(|(fr, _)| inside(fr.unix_ns)).flat_map(|(_, f)| f));
        own.extend(
            p.health
                .iter()
                .zip(&health_flags)
                .filter(|(h, _)| (e.start_unix_ns..=e.end_unix_ns + HEALTH_COVERS_NS).contains(&health_time(h)))
                .flat_map(|(_, f)| f),
        );
        // Routine outcomes of a tick are the task's content, not its quality.
        own.retain(|f| ![quality::REJECTED, quality::STOPPED, quality::LATE].contains(f));
        let f = flags(own, &video_wide);
        // A fixed stretch of work has no task.
        let task_id = (!e.kind.is_empty()).then_some(e.task_id.as_str());
        let disputed = f.iter().any(|x| x == quality::LABEL);
        if disputed || super::review::sampled(robot, &e.boot_id, &e.task_id) {
            reviews.push(super::review::ReviewItem {
                robot_id: robot.to_string(),
                boot_id: e.boot_id.clone(),
                task_id: e.task_id.clone(),
                kind: e.kind.clone(),
                start_unix_ns: e.start_unix_ns,
                auto_success: e.success,
                auto_reason: e.failure_reason.clone(),
                reason: if disputed { "disputed" } else { "sampled" }.to_string(),
                flags: f.clone(),
                label: None,
            });
        }
        rows(parts, &schema::TASKS, e.start_unix_ns, robot).push(&[
            V::S(Some(robot)),
            V::S(Some(&e.boot_id)),
            V::S(task_id),
            V::S(Some(&e.task_id)),
            V::S(Some(&e.kind)),
            V::S(Some(&e.model_version)),
            V::T(e.start_unix_ns),
            V::T(e.end_unix_ns),
            V::I(Some(i64_of(e.end_unix_ns.saturating_sub(e.start_unix_ns) / 1_000_000))),
            V::B(Some(e.success)),
            V::S(e.failure_reason.as_deref()),
            V::I(Some(i64_of(e.ticks))),
            V::I(Some(i64_of(e.rejects))),
            V::SL(&f),
            V::S(Some(&b.id)),
        ])?;
    }
    for (j, own) in p.joints.iter().zip(joint_flags) {
        let f = flags(own, &batch_wide);
        rows(parts, &schema::OBSERVATIONS, j.unix_ns, robot).push(&[
            V::S(Some(robot)),
            V::S(Some(&j.boot_id)),
            V::S(j.task_id.as_deref()),
            V::T(j.unix_ns),
            V::I(Some(i64_of(j.mono_ns))),
            V::F(Some(j.age_ns as f64 / 1e6)),
            V::L(&j.positions_rad),
            V::L(&j.velocities_rad_s),
            V::SL(&f),
            V::S(Some(&b.id)),
        ])?;
    }
    for (c, own) in p.control.iter().zip(action_flags) {
        let f = flags(own, &batch_wide);
        rows(parts, &schema::ACTIONS, c.unix_ns, robot).push(&[
            V::S(Some(robot)),
            V::S(Some(&c.boot_id)),
            V::S(c.task_id.as_deref()),
            V::T(c.unix_ns),
            V::I(Some(i64_of(c.mono_ns))),
            V::I(Some(i64::from(c.seq))),
            V::I(Some(i64_of(c.frame_seq))),
            V::S(Some(&c.mode)),
            V::B(Some(c.approved)),
            V::SL(&c.rejected_by),
            V::B(Some(c.from_baseline)),
            V::L(&c.goal_rad),
            V::F(Some(f64::from(c.goal_gripper))),
            V::L(&c.command_rad),
            V::F(Some(f64::from(c.command_gripper))),
            V::SL(&f),
            V::S(Some(&b.id)),
        ])?;
    }
    for i in &p.incidents {
        let f = flags(Vec::new(), &batch_wide);
        rows(parts, &schema::INCIDENTS, i.unix_ns, robot).push(&[
            V::S(Some(robot)),
            V::S(Some(&i.boot_id)),
            V::S(i.task_id.as_deref()),
            V::T(i.unix_ns),
            V::I(Some(i64_of(i.mono_ns))),
            V::S(Some(&i.check)),
            V::SL(&i.failed),
            V::F(Some(i.value)),
            V::F(Some(i.limit)),
            V::S(Some(&i.unit)),
            V::I(i.joint.map(i64::from)),
            V::I(Some(i64_of(i.frame_seq))),
            V::L(&i.rejected_rad),
            V::L(&i.substituted_rad),
            V::SL(&f),
            V::S(Some(&b.id)),
        ])?;
    }
    for (h, own) in p.health.iter().zip(health_flags) {
        let unix_ns = health_time(h);
        let f = flags(own, &batch_wide);
        let temps = h["motor_temp_c"].as_array().map(|t| t.iter().filter_map(|v| v.as_f64()).fold(f64::NAN, f64::max));
        let int = |k: &str| h[k].as_u64().map(i64_of);
        rows(parts, &schema::HEALTH, unix_ns, robot).push(&[
            V::S(Some(robot)),
            V::S(Some(h["boot_id"].as_str().unwrap_or_default())),
            V::S(h["task_id"].as_str()),
            V::T(unix_ns),
            V::S(h["mode"].as_str()),
            V::F(h["cpu_pct"].as_f64()),
            V::I(int("mem_used_bytes")),
            V::I(int("disk_free_bytes")),
            V::F(temps.filter(|t| !t.is_nan())),
            V::F(h["gripper_pressure_kpa"].as_f64()),
            V::F(h["latency_p99_ms"].as_f64()),
            V::I(int("deadline_misses")),
            V::I(int("governor_rejects")),
            V::B(h["link_alive"].as_bool()),
            V::SL(&f),
            V::S(Some(&b.id)),
        ])?;
    }
    for (fr, own) in p.frames.iter().zip(frame_flags) {
        let f = flags(own, &video_wide);
        let capture = super::recordings::frame_capture_unix_ns(fr);
        rows(parts, &schema::FRAMES, fr.unix_ns, robot).push(&[
            V::S(Some(robot)),
            V::S(Some(&fr.boot_id)),
            V::S(fr.task_id.as_deref()),
            V::T(fr.unix_ns),
            V::I(Some(i64_of(fr.frame_seq))),
            V::T(capture),
            V::F(Some(fr.latency_ms)),
            V::B(Some(fr.late)),
            V::B(Some(fr.unsafe_action)),
            V::B(Some(fr.from_baseline)),
            V::B(Some(fr.ok)),
            V::S(fr.has_image.then(|| image_id(robot, &fr.boot_id, fr.frame_seq, "camera")).as_deref()),
            V::S(Some(&b.edge_segment_id)),
            V::SL(&f),
            V::S(Some(&b.id)),
        ])?;
    }
    Ok(())
}

/// A person's label of a task, beside the robot's own outcome.
pub fn add_label(parts: &mut Partitions, item: &super::review::ReviewItem) -> Result<(), Mismatch> {
    let Some(l) = &item.label else { return Ok(()) };
    let task_id = (!item.kind.is_empty()).then_some(item.task_id.as_str());
    rows(parts, &schema::LABELS, l.unix_ns, &item.robot_id).push(&[
        V::S(Some(&item.robot_id)),
        V::S(Some(&item.boot_id)),
        V::S(task_id),
        V::S(Some(&item.task_id)),
        V::T(l.unix_ns),
        V::T(item.start_unix_ns),
        V::B(Some(l.success)),
        V::B(Some(item.auto_success)),
        V::S(item.auto_reason.as_deref()),
        V::S(Some(&item.reason)),
        V::S(Some(&l.by)),
        V::S(l.note.as_deref()),
        V::SL(&item.flags),
    ])
}
