//! The model registry and its rollout.
//!
//! `gantry-sync model publish` signs a model package directory with the
//! fleet's key and stores the archive (`models/VERSION.tar` in the object
//! store) with its version, metrics and notes. The rollout names the
//! `production` model (for every robot), optionally a `candidate` for a chosen
//! set or a percentage of robots (A/B), and remembers the previous production
//! for `rollback`. Statuses: `candidate` (published, or under test),
//! `production`, `archived` (replaced or rolled back). The service turns the
//! rollout into each robot's retained `gantry/{robot}/model` assignment.

use std::path::Path;

use anyhow::Context as _;
use gantry_config::wire::ModelAssignment;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::sql::{Db, Row, Tx};
use crate::vals;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelRow {
    pub version: String,
    pub name: String,
    pub status: String,
    pub sha256: String,
    pub bytes: u64,
    pub object_key: String,
    /// JSON given at publication (evaluation results).
    pub metrics: serde_json::Value,
    pub notes: String,
    pub published_unix_ns: u64,
}

/// Who runs what.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RolloutPlan {
    pub production: Option<String>,
    /// The production model before the current one: where `rollback` goes.
    pub previous: Option<String>,
    pub candidate: Option<String>,
    /// Share of the fleet on the candidate, 0–100 (when no robots are named).
    pub candidate_percent: f64,
    /// Robots named for the candidate.
    pub candidate_robots: Vec<String>,
}

impl RolloutPlan {
    /// The robots (of `fleet`) that get the candidate: those named, or the
    /// `ceil(percent × N)` with the smallest hash of (candidate, robot) — a
    /// stable choice that a growing fleet changes little.
    pub fn candidate_set(&self, fleet: &[String]) -> Vec<String> {
        let Some(candidate) = &self.candidate else { return Vec::new() };
        if !self.candidate_robots.is_empty() {
            return fleet.iter().filter(|r| self.candidate_robots.contains(r)).cloned().collect();
        }
        let n = (self.candidate_percent / 100.0 * fleet.len() as f64).ceil() as usize;
        let mut ranked: Vec<(Vec<u8>, &String)> =
            fleet.iter().map(|r| (Sha256::digest(format!("{candidate}/{r}").as_bytes()).to_vec(), r)).collect();
        ranked.sort();
        let mut chosen: Vec<String> = ranked.into_iter().take(n).map(|(_, r)| r.clone()).collect();
        chosen.sort();
        chosen
    }
}

pub struct Registry {
    db: Db,
    store: std::sync::Arc<dyn ObjectStore>,
    prefix: ObjectPath,
}

/// What the registry reads from a manifest.
#[derive(serde::Deserialize)]
struct Head {
    name: String,
    version: String,
    sha256: String,
    /// The evaluation a model was published with (e.g. per-task accuracy).
    #[serde(default)]
    metrics: Option<toml::Table>,
}

/// The registry's tables, on either engine.
pub(crate) const SCHEMA: [&str; 3] = [
    "CREATE TABLE IF NOT EXISTS models (version TEXT PRIMARY KEY, name TEXT NOT NULL, status TEXT NOT NULL, \
     sha256 TEXT NOT NULL, bytes BIGINT NOT NULL, object_key TEXT NOT NULL, metrics TEXT NOT NULL, \
     notes TEXT NOT NULL, published_unix_ns BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rollout (id BIGINT PRIMARY KEY CHECK (id = 1), production TEXT, previous TEXT, \
     candidate TEXT, candidate_percent DOUBLE PRECISION NOT NULL DEFAULT 0, \
     candidate_robots TEXT NOT NULL DEFAULT '[]')",
    "INSERT INTO rollout (id) VALUES (1) ON CONFLICT DO NOTHING",
];

/// Taken by every change of the rollout, which operators may make through
/// two replicas at once.
const ROLLOUT_LOCK: i64 = 0x6761_6e74_7279_0021;

fn model_row(r: &Row) -> anyhow::Result<ModelRow> {
    Ok(ModelRow {
        version: r.text(0)?,
        name: r.text(1)?,
        status: r.text(2)?,
        sha256: r.text(3)?,
        bytes: r.u64(4)?,
        object_key: r.text(5)?,
        metrics: serde_json::from_str(&r.text(6)?).unwrap_or(serde_json::Value::Null),
        notes: r.text(7)?,
        published_unix_ns: r.u64(8)?,
    })
}

const MODEL_COLUMNS: &str = "version, name, status, sha256, bytes, object_key, metrics, notes, published_unix_ns";

/// The rollout's single row, inside a transaction.
fn plan_in(tx: &mut dyn Tx) -> anyhow::Result<RolloutPlan> {
    let r = tx
        .query_one(
            "SELECT production, previous, candidate, candidate_percent, candidate_robots FROM rollout WHERE id = 1",
            &[],
        )?
        .context("the rollout's row is missing")?;
    Ok(RolloutPlan {
        production: r.opt_text(0)?,
        previous: r.opt_text(1)?,
        candidate: r.opt_text(2)?,
        candidate_percent: r.real(3)?,
        candidate_robots: serde_json::from_str(&r.text(4)?).unwrap_or_default(),
    })
}

impl Registry {
    /// The registry in `db` (see [`crate::ops::open_db`]); packages go to
    /// `store` under `prefix`.
    pub fn new(db: Db, store: std::sync::Arc<dyn ObjectStore>, prefix: ObjectPath) -> Self {
        Self { db, store, prefix }
    }

    /// The registry in `data_dir/registry.sqlite`.
    pub fn open(data_dir: &Path, store: std::sync::Arc<dyn ObjectStore>, prefix: ObjectPath) -> anyhow::Result<Self> {
        Ok(Self::new(crate::ops::open_db(data_dir, None)?, store, prefix))
    }

    pub fn models(&self) -> anyhow::Result<Vec<ModelRow>> {
        let rows =
            self.db.query_owned(format!("SELECT {MODEL_COLUMNS} FROM models ORDER BY published_unix_ns"), &[])?;
        rows.iter().map(model_row).collect()
    }

    pub fn model(&self, version: &str) -> anyhow::Result<Option<ModelRow>> {
        let rows =
            self.db.query_owned(format!("SELECT {MODEL_COLUMNS} FROM models WHERE version = ?1"), &vals![version])?;
        rows.first().map(model_row).transpose()
    }

    pub fn plan(&self) -> anyhow::Result<RolloutPlan> {
        self.db.transaction(plan_in)
    }

    /// Signs and stores the package in `dir`; it starts as a `candidate` nobody runs yet.
    pub async fn publish(
        &self,
        dir: &Path,
        key: &ed25519_dalek::SigningKey,
        fleet_public_key: Option<&ed25519_dalek::VerifyingKey>,
        metrics: serde_json::Value,
        notes: &str,
        who: &str,
    ) -> anyhow::Result<ModelRow> {
        let onnx =
            std::fs::read(dir.join("model.onnx")).with_context(|| format!("{}: no model.onnx", dir.display()))?;
        let manifest = std::fs::read_to_string(dir.join("manifest.toml"))
            .with_context(|| format!("{}: no manifest.toml", dir.display()))?;
        let head: Head = toml::from_str(&manifest).with_context(|| format!("{}/manifest.toml", dir.display()))?;
        anyhow::ensure!(
            gantry_config::wire::sha256_hex(&onnx).eq_ignore_ascii_case(head.sha256.trim()),
            "{}: model.onnx does not match the manifest's sha256",
            dir.display()
        );
        let archive = gantry_config::package::pack(dir, key)?;
        self.publish_archive(archive, fleet_public_key, metrics, notes, who).await
    }

    /// Stores a package archive signed elsewhere (a key kept offline). With
    /// `fleet_public_key`, a package it does not verify is refused here already.
    pub async fn publish_archive(
        &self,
        archive: Vec<u8>,
        fleet_public_key: Option<&ed25519_dalek::VerifyingKey>,
        metrics: serde_json::Value,
        notes: &str,
        who: &str,
    ) -> anyhow::Result<ModelRow> {
        let manifest = match fleet_public_key {
            Some(key) => {
                gantry_config::package::unpack(&archive, key)
                    .context("the package does not verify against models.fleet_public_key; robots would refuse it")?
                    .manifest
            }
            None => gantry_config::package::manifest_of(&archive)?,
        };
        let head: Head = toml::from_str(std::str::from_utf8(&manifest)?).context("the package's manifest.toml")?;
        anyhow::ensure!(
            gantry_config::wire::valid_robot_id(&head.version),
            "version {:?}: use letters, digits, '-', '_', '.'",
            head.version
        );
        anyhow::ensure!(self.model(&head.version)?.is_none(), "version {} is already published", head.version);
        // The manifest's own evaluation, unless one is given at publication.
        let metrics = match (metrics, &head.metrics) {
            (serde_json::Value::Null, Some(m)) => serde_json::to_value(m)?,
            (given, _) => given,
        };
        let key_path = if self.prefix.as_ref().is_empty() {
            ObjectPath::from(format!("models/{}.tar", head.version))
        } else {
            ObjectPath::from(format!("{}/models/{}.tar", self.prefix, head.version))
        };
        let row = ModelRow {
            version: head.version,
            name: head.name,
            status: "candidate".into(),
            sha256: gantry_config::wire::sha256_hex(&archive),
            bytes: archive.len() as u64,
            object_key: key_path.to_string(),
            metrics,
            notes: notes.into(),
            published_unix_ns: crate::unix_now_ns(),
        };
        self.store.put(&key_path, archive.into()).await.context("storing the package")?;
        let (row, who) = (row, who.to_string());
        self.db.transaction(move |tx| {
            let taken = tx.execute(
                &format!(
                    "INSERT INTO models ({MODEL_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT DO NOTHING"
                ),
                &vals![
                    &row.version,
                    &row.name,
                    &row.status,
                    &row.sha256,
                    row.bytes,
                    &row.object_key,
                    row.metrics.to_string(),
                    &row.notes,
                    row.published_unix_ns
                ],
            )?;
            // Published through another replica meanwhile.
            anyhow::ensure!(taken == 1, "version {} is already published", row.version);
            let note = crate::ops::Note {
                kind: "model.published",
                subject: &row.version,
                who: &who,
                message: &format!("published model {} ({} bytes) as a candidate", row.version, row.bytes),
                details: &serde_json::json!({"sha256": row.sha256, "metrics": row.metrics, "notes": row.notes}),
            };
            crate::ops::log_in(tx, row.published_unix_ns, &note, None)?;
            Ok(row)
        })
    }

    fn require(&self, version: &str) -> anyhow::Result<ModelRow> {
        self.model(version)?.with_context(|| format!("no published model {version:?} (see `gantry-sync model list`)"))
    }

    /// Makes `version` production for every robot not on a candidate.
    pub fn promote(&self, version: &str, who: &str, why: &str) -> anyhow::Result<()> {
        self.require(version)?;
        let (version, who, why) = (version.to_string(), who.to_string(), why.to_string());
        self.db.transaction(move |tx| {
            tx.serialize(ROLLOUT_LOCK)?;
            let production = plan_in(tx)?.production;
            if production.as_deref() == Some(version.as_str()) {
                return Ok(());
            }
            tx.execute("UPDATE models SET status = 'archived' WHERE status = 'production'", &[])?;
            tx.execute("UPDATE models SET status = 'production' WHERE version = ?1", &vals![&version])?;
            tx.execute(
                "UPDATE rollout SET previous = production, production = ?1, \
                 candidate = CASE WHEN candidate = ?1 THEN NULL ELSE candidate END WHERE id = 1",
                &vals![&version],
            )?;
            let message = format!(
                "promoted {version} to production (was {}){}",
                production.as_deref().unwrap_or("none"),
                if why.is_empty() { String::new() } else { format!(": {why}") }
            );
            let details = serde_json::json!({"previous": production});
            let note = crate::ops::Note {
                kind: "model.promoted",
                subject: &version,
                who: &who,
                message: &message,
                details: &details,
            };
            crate::ops::log_in(tx, crate::unix_now_ns(), &note, None)
        })
    }

    /// Puts `version` on a share of the fleet (`percent`) or on named `robots`.
    pub fn set_candidate(&self, version: &str, percent: f64, robots: &[String], who: &str) -> anyhow::Result<()> {
        self.require(version)?;
        anyhow::ensure!((0.0..=100.0).contains(&percent), "--percent: {percent} is not between 0 and 100");
        let (version, robots, who) = (version.to_string(), robots.to_vec(), who.to_string());
        self.db.transaction(move |tx| {
            tx.serialize(ROLLOUT_LOCK)?;
            tx.execute(
                "UPDATE models SET status = 'archived' WHERE status = 'candidate' \
                 AND version IN (SELECT candidate FROM rollout WHERE candidate IS NOT NULL)",
                &[],
            )?;
            tx.execute(
                "UPDATE models SET status = 'candidate' WHERE version = ?1 AND status <> 'production'",
                &vals![&version],
            )?;
            tx.execute(
                "UPDATE rollout SET candidate = ?1, candidate_percent = ?2, candidate_robots = ?3 WHERE id = 1",
                &vals![&version, percent, serde_json::to_string(&robots)?],
            )?;
            let on = if robots.is_empty() { format!("{percent} % of the fleet") } else { robots.join(", ") };
            let message = format!("started an A/B test of {version} on {on}");
            let details = serde_json::json!({"percent": percent, "robots": robots});
            let note = crate::ops::Note {
                kind: "model.candidate",
                subject: &version,
                who: &who,
                message: &message,
                details: &details,
            };
            crate::ops::log_in(tx, crate::unix_now_ns(), &note, None)
        })
    }

    /// Ends the candidate test: its robots return to production.
    pub fn clear_candidate(&self, who: &str, why: &str) -> anyhow::Result<()> {
        let (who, why) = (who.to_string(), why.to_string());
        self.db.transaction(move |tx| {
            tx.serialize(ROLLOUT_LOCK)?;
            let Some(candidate) = plan_in(tx)?.candidate else { return Ok(()) };
            tx.execute(
                "UPDATE rollout SET candidate = NULL, candidate_percent = 0, candidate_robots = '[]' WHERE id = 1",
                &[],
            )?;
            tx.execute(
                "UPDATE models SET status = 'archived' WHERE version = ?1 AND status = 'candidate'",
                &vals![&candidate],
            )?;
            let message = format!(
                "ended the A/B test of {candidate}: its robots return to production{}",
                if why.is_empty() { String::new() } else { format!(" ({why})") }
            );
            let note = crate::ops::Note {
                kind: "model.candidate_ended",
                subject: &candidate,
                who: &who,
                message: &message,
                details: &serde_json::Value::Null,
            };
            crate::ops::log_in(tx, crate::unix_now_ns(), &note, None)
        })
    }

    /// Production goes back to the previous production model.
    pub fn rollback(&self, who: &str) -> anyhow::Result<String> {
        let who = who.to_string();
        self.db.transaction(move |tx| {
            tx.serialize(ROLLOUT_LOCK)?;
            let plan = plan_in(tx)?;
            let previous = plan.previous.context("no previous production model to roll back to")?;
            tx.execute("UPDATE models SET status = 'archived' WHERE status = 'production'", &[])?;
            tx.execute("UPDATE models SET status = 'production' WHERE version = ?1", &vals![&previous])?;
            tx.execute("UPDATE rollout SET production = previous, previous = NULL WHERE id = 1", &[])?;
            let from = plan.production.unwrap_or_default();
            let message = format!("rolled production back from {from} to {previous}");
            let details = serde_json::json!({"from": from, "to": previous});
            let note = crate::ops::Note {
                kind: "model.rolled_back",
                subject: &previous,
                who: &who,
                message: &message,
                details: &details,
            };
            crate::ops::log_in(tx, crate::unix_now_ns(), &note, None)?;
            Ok(previous)
        })
    }

    /// Each robot's assignment under the current plan (robots with none are left out).
    pub fn assignments(&self, fleet: &[String]) -> anyhow::Result<Vec<(String, ModelAssignment)>> {
        let plan = self.plan()?;
        let chosen = plan.candidate_set(fleet);
        let assignment = |version: &str, status: &str| -> anyhow::Result<ModelAssignment> {
            let m = self.require(version)?;
            Ok(ModelAssignment {
                version: m.version.clone(),
                status: status.into(),
                sha256: m.sha256,
                bytes: m.bytes,
                path: format!("/api/models/{}/package", m.version),
            })
        };
        let production = plan.production.as_deref().map(|v| assignment(v, "production")).transpose()?;
        let candidate = plan.candidate.as_deref().map(|v| assignment(v, "candidate")).transpose()?;
        Ok(fleet
            .iter()
            .filter_map(|r| {
                let a = if chosen.contains(r) { candidate.clone() } else { production.clone() };
                a.map(|a| (r.clone(), a))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("robot-{i}")).collect()
    }

    #[test]
    fn a_percentage_picks_that_many_robots_stably() {
        let plan = RolloutPlan { candidate: Some("m-2".into()), candidate_percent: 20.0, ..Default::default() };
        let chosen = plan.candidate_set(&fleet(10));
        assert_eq!(chosen.len(), 2);
        assert_eq!(plan.candidate_set(&fleet(10)), chosen, "the same every time");
        // Growing the fleet keeps most of the choice.
        let bigger = plan.candidate_set(&fleet(11));
        assert_eq!(bigger.len(), 3);
        assert!(chosen.iter().filter(|r| bigger.contains(r)).count() >= 1);
        let named = RolloutPlan { candidate_robots: vec!["robot-3".into(), "robot-99".into()], ..plan.clone() };
        assert_eq!(named.candidate_set(&fleet(10)), ["robot-3"]);
        let none = RolloutPlan { candidate: None, ..plan };
        assert!(none.candidate_set(&fleet(10)).is_empty());
    }
}
