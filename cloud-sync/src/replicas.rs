//! Several `gantry-sync` replicas on one PostgreSQL catalog and one external
//! broker. Each beats every second in the catalog's `replicas` table; a
//! survivor takes over the broker session of a replica whose beat stops
//! (killed, its host gone) until that replica beats again.
//!
//! Why a takeover: the broker shares the ingest subscription among the
//! replicas' persistent sessions and goes on queuing a dead replica's share,
//! and whatever was in flight to it, for its client id (Mosquitto does; MQTT
//! allows it). A survivor that connects with that id receives all of it and
//! stores it (exactly once: the catalog deduplicates). When the replica
//! returns it connects with its own id, and the broker hands it its session.
//!
//! The same beats choose the leader: the live replica with the smallest
//! client id runs what must run once (the lake export, alerts and the
//! rollout review, whose state is still per replica).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::MqttOptions;
use tokio::sync::watch;

use crate::ingest::Ingest;
use crate::pg::PgCatalog;

/// How often a replica beats and looks at the others.
pub const BEAT: Duration = Duration::from_secs(1);
/// A replica silent this long is taken for dead.
pub const DEAD_AFTER: Duration = Duration::from_secs(5);

/// MQTT options for a client id (the broker's address, TLS and credentials).
pub type ClientOptions = dyn Fn(&str) -> anyhow::Result<MqttOptions> + Send + Sync;

/// Beats as `me`, takes over the sessions of silent replicas and says
/// whether `me` leads, until `stopped`.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    pg: Arc<PgCatalog>,
    me: String,
    leader: Arc<AtomicBool>,
    ingest: Arc<Ingest>,
    options: Arc<ClientOptions>,
    share_group: Option<String>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut taken: HashMap<String, watch::Sender<bool>> = HashMap::new();
    let mut tick = tokio::time::interval(BEAT);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.wait_for(|s| *s) => break,
        }
        let peers = pg.beat(&me).and_then(|()| pg.peers(&me));
        let peers = match peers {
            Ok(p) => {
                failing = false;
                p
            }
            Err(e) => {
                // Cut off from the others: it cannot know who leads.
                leader.store(false, Relaxed);
                if !failing {
                    tracing::warn!(error = %format!("{e:#}"), "replicas: the catalog does not answer; no takeover until it does");
                }
                failing = true;
                continue;
            }
        };
        let live = |silent_ns: u64| silent_ns <= DEAD_AFTER.as_nanos() as u64;
        let leads = peers.iter().filter(|(_, s)| live(*s)).all(|(peer, _)| *peer > me);
        if leader.swap(leads, Relaxed) != leads {
            tracing::info!(replica = %me, leads, "replicas: leadership changed");
        }
        for (peer, silent_ns) in peers {
            let dead = !live(silent_ns);
            if dead && !taken.contains_key(&peer) {
                let o = match options(&peer) {
                    Ok(o) => o,
                    Err(e) => {
                        tracing::error!(%peer, error = %format!("{e:#}"), "replicas: cannot take over a session");
                        continue;
                    }
                };
                tracing::warn!(
                    %peer, silent_s = silent_ns / 1_000_000_000,
                    "replicas: a replica stopped beating; taking over its broker session (restart it, or leave it: nothing it was sent is lost)"
                );
                let (stop, stop_rx) = watch::channel(false);
                tokio::spawn(crate::ingest::run(ingest.clone(), o, share_group.clone(), false, stop_rx));
                taken.insert(peer, stop);
            } else if !dead {
                if let Some(stop) = taken.remove(&peer) {
                    tracing::info!(%peer, "replicas: the replica beats again; its session is its own");
                    let _ = stop.send(true);
                }
            }
        }
    }
    for stop in taken.into_values() {
        let _ = stop.send(true);
    }
}
