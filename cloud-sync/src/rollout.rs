//! The A/B test of a candidate model, decided on task outcomes.
//!
//! Robots report which model ran each attempt. From the moment the candidate
//! went out, its attempts are compared with production's on the task kinds
//! both ran:
//! - **no catastrophic drop**: a kind with `rollout.min_attempts_per_kind` on
//!   each side where the candidate's success rate is more than
//!   `rollout.max_kind_drop` below production's rolls it back at once;
//! - **not worse overall** (non-inferiority): with `rollout.min_attempts` on
//!   each side, the confidence interval of (candidate − production), Agresti–
//!   Caffo adjusted so that 100 % on both sides still has a width, must lie
//!   above −`rollout.margin` to promote; lying wholly below it rolls back.
//!
//! With `rollout.decide = "auto"` the verdict is acted on (promote, or end the
//! test so every robot returns to production); with `"recommend"` it is only
//! logged. Either way the incident log says why, with the numbers. The
//! robots' own probation (a model that misbehaves on the robot is rolled back
//! there) stays the fast first line.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::json;

use crate::tasks::OutcomeCount;

/// Whether an attempt's outcome speaks about the model that ran it: a success,
/// or a failure of the work itself. E-stops, interruptions, lost leases and
/// refusals say nothing about the policy.
pub fn counts(reason: &str, success: bool) -> bool {
    success || matches!(reason, "task_failed" | "blocked")
}

/// Successes out of attempts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Tally {
    pub attempts: u64,
    pub successes: u64,
}

impl Tally {
    pub fn rate(&self) -> Option<f64> {
        (self.attempts > 0).then(|| self.successes as f64 / self.attempts as f64)
    }

    pub(crate) fn add(&mut self, success: bool, n: u64) {
        self.attempts += n;
        if success {
            self.successes += n;
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Not enough evidence yet; the sentence says what is missing.
    Pending(String),
    Promote(String),
    Rollback(String),
}

/// The comparison and its verdict, as logged.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub candidate: Tally,
    pub production: Tally,
    pub by_kind: BTreeMap<String, (Tally, Tally)>,
    /// The confidence interval of (candidate − production) over the shared kinds.
    pub difference: Option<(f64, f64)>,
}

/// The standard normal quantile (Acklam's rational approximation, relative
/// error below 1.2e-9): the interval needs only this one function, not a
/// statistics crate.
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.383_577_518_672_69e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] =
        [-5.447609879822406e1, 1.615858368580409e2, -1.556989798598866e2, 6.680131188771972e1, -1.328068155288572e1];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];
    let p = p.clamp(1e-300, 1.0 - 1e-16);
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// The Agresti–Caffo interval of (a − b) at two-sided `confidence`.
pub fn difference_interval(a: Tally, b: Tally, confidence: f64) -> (f64, f64) {
    let z = normal_quantile(1.0 - (1.0 - confidence) / 2.0);
    let adj = |t: Tally| ((t.successes as f64 + 1.0) / (t.attempts as f64 + 2.0), t.attempts as f64 + 2.0);
    let (pa, na) = adj(a);
    let (pb, nb) = adj(b);
    let d = pa - pb;
    let se = (pa * (1.0 - pa) / na + pb * (1.0 - pb) / nb).sqrt();
    (d - z * se, d + z * se)
}

/// Judges `candidate` against `production` on `outcomes` (attempts since the
/// test began, counted).
pub fn evaluate(
    outcomes: &[OutcomeCount],
    candidate: &str,
    production: &str,
    r: &gantry_config::cloud::Rollout,
) -> (Verdict, Evaluation) {
    let mut by_kind: BTreeMap<String, (Tally, Tally)> = BTreeMap::new();
    for o in outcomes.iter().filter(|o| counts(&o.reason, o.success)) {
        let side = if o.model_version == candidate {
            0
        } else if o.model_version == production {
            1
        } else {
            continue;
        };
        let e = by_kind.entry(o.kind.clone()).or_default();
        if side == 0 {
            e.0.add(o.success, o.attempts)
        } else {
            e.1.add(o.success, o.attempts)
        }
    }
    // Only kinds both ran are compared: the same work on each side.
    let shared: Vec<(&String, &(Tally, Tally))> =
        by_kind.iter().filter(|(_, (c, p))| c.attempts > 0 && p.attempts > 0).collect();
    let mut cand = Tally::default();
    let mut prod = Tally::default();
    for (_, (c, p)) in &shared {
        cand.attempts += c.attempts;
        cand.successes += c.successes;
        prod.attempts += p.attempts;
        prod.successes += p.successes;
    }
    let mut eval = Evaluation { candidate: cand, production: prod, by_kind: by_kind.clone(), difference: None };
    let pct = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{:.1} %", 100.0 * v));
    for (kind, (c, p)) in &shared {
        if c.attempts < r.min_attempts_per_kind || p.attempts < r.min_attempts_per_kind {
            continue;
        }
        let (Some(cr), Some(pr)) = (c.rate(), p.rate()) else { continue };
        if pr - cr > r.max_kind_drop {
            let why = format!(
                "on {kind} tasks the candidate {candidate} succeeded {} of {} ({}) against production {production}'s {} of {} ({}): a drop of {:.1} points, more than the {:.1} allowed (rollout.max_kind_drop)",
                c.successes,
                c.attempts,
                pct(Some(cr)),
                p.successes,
                p.attempts,
                pct(Some(pr)),
                100.0 * (pr - cr),
                100.0 * r.max_kind_drop
            );
            return (Verdict::Rollback(why), eval);
        }
    }
    if cand.attempts < r.min_attempts || prod.attempts < r.min_attempts {
        let why = format!(
            "waiting for evidence: {} candidate and {} production attempts on shared task kinds, {} each needed (rollout.min_attempts)",
            cand.attempts, prod.attempts, r.min_attempts
        );
        return (Verdict::Pending(why), eval);
    }
    let (lo, hi) = difference_interval(cand, prod, r.confidence);
    eval.difference = Some((lo, hi));
    let summary = format!(
        "candidate {candidate} {} of {} ({}), production {production} {} of {} ({}); {:.0} % interval of the difference [{:+.1}, {:+.1}] points against a margin of −{:.1}",
        cand.successes,
        cand.attempts,
        pct(cand.rate()),
        prod.successes,
        prod.attempts,
        pct(prod.rate()),
        100.0 * r.confidence,
        100.0 * lo,
        100.0 * hi,
        100.0 * r.margin
    );
    if hi < -r.margin {
        return (Verdict::Rollback(format!("worse overall: {summary}")), eval);
    }
    // Every kind production does in numbers must have been judged on the candidate too.
    let unjudged: Vec<&String> = by_kind
        .iter()
        .filter(|(_, (c, p))| p.attempts >= r.min_attempts_per_kind && c.attempts < r.min_attempts_per_kind)
        .map(|(k, _)| k)
        .collect();
    if lo > -r.margin && unjudged.is_empty() {
        return (Verdict::Promote(format!("not worse overall, no task kind dropped: {summary}")), eval);
    }
    let why = if unjudged.is_empty() {
        format!("undecided: {summary}")
    } else {
        format!("waiting for candidate attempts on {unjudged:?}: {summary}")
    };
    (Verdict::Pending(why), eval)
}

/// One look at the current A/B test: the verdict logged (and, with
/// `decide = auto`, acted on) once per candidate.
pub fn review(
    registry: &crate::models::Registry,
    journal: &crate::ops::Journal,
    catalog: &dyn crate::tasks::TaskCatalog,
    r: &gantry_config::cloud::Rollout,
    now: u64,
) -> anyhow::Result<Option<Verdict>> {
    let plan = registry.plan()?;
    let (Some(candidate), Some(production)) = (plan.candidate, plan.production) else { return Ok(None) };
    let test = journal.ab_test(&candidate, Some(&production), now)?;
    if test.verdict.is_some() {
        return Ok(None);
    }
    let outcomes = catalog.outcome_counts(test.since_unix_ns)?;
    let (verdict, eval) = evaluate(&outcomes, &candidate, &production, r);
    let auto = r.decide == gantry_config::cloud::Decide::Auto;
    let details = json!({
        "candidate": candidate,
        "production": production,
        "evaluation": eval,
        "rollout": r,
    });
    match &verdict {
        Verdict::Pending(_) => return Ok(Some(verdict)),
        Verdict::Promote(why) => {
            if auto {
                registry.promote(&candidate, crate::ops::SERVICE, &format!("A/B test: {why}"))?;
            }
            let (kind, what) = if auto {
                ("rollout.promoted", "promoted")
            } else {
                ("rollout.recommend_promote", "recommends promoting")
            };
            journal.log(
                now,
                kind,
                &candidate,
                crate::ops::SERVICE,
                &format!("A/B test {what} {candidate}: {why}"),
                details,
            );
            journal.set_verdict(&candidate, "promote", now)?;
        }
        Verdict::Rollback(why) => {
            if auto {
                registry.clear_candidate(crate::ops::SERVICE, "A/B test failed")?;
            }
            let (kind, what) = if auto {
                ("rollout.rolled_back", "rolled back")
            } else {
                ("rollout.recommend_rollback", "recommends rolling back")
            };
            journal.log(
                now,
                kind,
                &candidate,
                crate::ops::SERVICE,
                &format!("A/B test {what} {candidate} fleet-wide: {why}"),
                details,
            );
            journal.set_verdict(&candidate, "rollback", now)?;
        }
    }
    tracing::info!(%candidate, ?verdict, auto, "A/B verdict");
    Ok(Some(verdict))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcomes(model: &str, kind: &str, ok: u64, bad: u64) -> Vec<OutcomeCount> {
        let count = |success: bool, reason: &str, attempts| OutcomeCount {
            model_version: model.into(),
            kind: kind.into(),
            success,
            reason: reason.into(),
            attempts,
        };
        vec![count(true, "", ok), count(false, "task_failed", bad)]
    }

    #[test]
    fn the_normal_quantile_matches_tables() {
        assert!((normal_quantile(0.975) - 1.959_964).abs() < 1e-5);
        assert!((normal_quantile(0.5)).abs() < 1e-9);
        assert!((normal_quantile(0.005) + 2.575_829).abs() < 1e-5);
    }

    #[test]
    fn a_drop_on_one_kind_rolls_back_and_an_equal_candidate_is_promoted() {
        let r = gantry_config::cloud::Rollout::default();
        let mut o = outcomes("prod", "pick", 48, 2);
        o.extend(outcomes("prod", "place", 49, 1));
        o.extend(outcomes("cand", "pick", 6, 14));
        o.extend(outcomes("cand", "place", 20, 0));
        let (v, _) = evaluate(&o, "cand", "prod", &r);
        assert!(matches!(&v, Verdict::Rollback(why) if why.contains("pick")), "{v:?}");

        let mut o = outcomes("prod", "pick", 97, 3);
        o.extend(outcomes("cand", "pick", 98, 2));
        let (v, e) = evaluate(&o, "cand", "prod", &r);
        assert!(matches!(v, Verdict::Promote(_)), "{v:?}");
        let (lo, hi) = e.difference.unwrap();
        assert!(lo > -0.05 && hi > 0.0, "{lo} {hi}");

        // Too few attempts: no verdict either way.
        let mut o = outcomes("prod", "pick", 10, 0);
        o.extend(outcomes("cand", "pick", 10, 0));
        assert!(matches!(evaluate(&o, "cand", "prod", &r).0, Verdict::Pending(_)));

        // E-stops say nothing about the model.
        let mut o = outcomes("prod", "pick", 100, 0);
        o.extend(outcomes("cand", "pick", 100, 0));
        o.push(OutcomeCount {
            model_version: "cand".into(),
            kind: "pick".into(),
            success: false,
            reason: "estop".into(),
            attempts: 30,
        });
        assert!(matches!(evaluate(&o, "cand", "prod", &r).0, Verdict::Promote(_)));
    }
}
