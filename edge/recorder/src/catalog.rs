//! The local catalog of recorded segments: SQLite in WAL mode, one row per
//! segment file, written only after the file is durable. Every connection
//! (recorder, uplink, status page) opens its own; WAL lets them read while the
//! recorder writes.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

/// A segment's place in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentState {
    /// Closed normally.
    Finalized,
    /// Rebuilt after a crash from the complete chunks of an unfinished file.
    Recovered,
    /// Unfinished and unreadable: kept aside under `quarantine/`, never served.
    Quarantined,
    /// Deleted by the disk quota; the row stays as the record of it.
    Evicted,
}

impl SegmentState {
    pub fn as_str(self) -> &'static str {
        match self {
            SegmentState::Finalized => "finalized",
            SegmentState::Recovered => "recovered",
            SegmentState::Quarantined => "quarantined",
            SegmentState::Evicted => "evicted",
        }
    }

    fn parse(s: &str) -> rusqlite::Result<Self> {
        Ok(match s {
            "finalized" => SegmentState::Finalized,
            "recovered" => SegmentState::Recovered,
            "quarantined" => SegmentState::Quarantined,
            "evicted" => SegmentState::Evicted,
            other => {
                return Err(rusqlite::Error::FromSqlConversionFailure(
                    0,
                    rusqlite::types::Type::Text,
                    format!("unknown segment state {other:?}").into(),
                ))
            }
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentRow {
    /// The file's stem; unique per robot.
    pub id: String,
    /// File name under the data directory's `segments/` (see [`SegmentRow::path`]).
    pub file: String,
    pub state: SegmentState,
    pub start_unix_ns: u64,
    pub end_unix_ns: u64,
    pub bytes: u64,
    /// Lower-case hex SHA-256 of the file.
    pub sha256: String,
    pub messages: u64,
    pub synced: bool,
    pub created_unix_ns: u64,
}

impl SegmentRow {
    /// The segment file's path.
    pub fn path(&self, data_dir: &Path) -> std::path::PathBuf {
        data_dir.join("segments").join(&self.file)
    }
}

pub struct Catalog {
    conn: Connection,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS segments (
    id TEXT PRIMARY KEY,
    file TEXT NOT NULL,
    state TEXT NOT NULL,
    start_unix_ns INTEGER NOT NULL,
    end_unix_ns INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    messages INTEGER NOT NULL,
    synced INTEGER NOT NULL DEFAULT 0,
    created_unix_ns INTEGER NOT NULL,
    evicted_unix_ns INTEGER,
    evicted_unsynced INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS segments_by_start ON segments (start_unix_ns);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    kind INTEGER NOT NULL,
    created_unix_ns INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_by_priority ON outbox (kind, seq);
";

/// Counters kept across restarts.
pub const LOST_SEGMENTS: &str = "lost_unsynced_segments";
pub const LOST_BYTES: &str = "lost_unsynced_bytes";
pub const QUARANTINED: &str = "quarantined_segments";
pub const RECOVERED: &str = "recovered_segments";
/// The last log batch sequence number handed out; never reused.
pub const BATCH_SEQ: &str = "batch_seq";
pub const OUTBOX_DROPPED: &str = "outbox_dropped_batches";

const COLUMNS: &str = "id, file, state, start_unix_ns, end_unix_ns, bytes, sha256, messages, synced, created_unix_ns";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SegmentRow> {
    Ok(SegmentRow {
        id: r.get(0)?,
        file: r.get(1)?,
        state: SegmentState::parse(&r.get::<_, String>(2)?)?,
        start_unix_ns: r.get::<_, i64>(3)? as u64,
        end_unix_ns: r.get::<_, i64>(4)? as u64,
        bytes: r.get::<_, i64>(5)? as u64,
        sha256: r.get(6)?,
        messages: r.get::<_, i64>(7)? as u64,
        synced: r.get(8)?,
        created_unix_ns: r.get::<_, i64>(9)? as u64,
    })
}

impl Catalog {
    pub fn open(path: &Path) -> rusqlite::Result<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // Rows are few (one per segment): pay for durability on power loss too.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self { conn })
    }

    pub fn insert(&self, s: &SegmentRow) -> rusqlite::Result<()> {
        self.conn.execute(
            &format!("INSERT OR REPLACE INTO segments ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
            params![
                s.id,
                s.file,
                s.state.as_str(),
                s.start_unix_ns as i64,
                s.end_unix_ns as i64,
                s.bytes as i64,
                s.sha256,
                s.messages as i64,
                s.synced,
                s.created_unix_ns as i64
            ],
        )?;
        Ok(())
    }

    pub fn get(&self, id: &str) -> rusqlite::Result<Option<SegmentRow>> {
        self.conn.query_row(&format!("SELECT {COLUMNS} FROM segments WHERE id = ?1"), [id], row).optional()
    }

    /// Every segment, oldest first.
    pub fn all(&self) -> rusqlite::Result<Vec<SegmentRow>> {
        let mut stmt = self.conn.prepare(&format!("SELECT {COLUMNS} FROM segments ORDER BY start_unix_ns, id"))?;
        let rows = stmt.query_map([], row)?.collect();
        rows
    }

    /// Segments whose file is on disk (not evicted), oldest first.
    pub fn on_disk(&self) -> rusqlite::Result<Vec<SegmentRow>> {
        Ok(self.all()?.into_iter().filter(|s| s.state != SegmentState::Evicted).collect())
    }

    /// Marks a segment as safely stored in the cloud: it may now be evicted.
    pub fn mark_synced(&self, id: &str) -> rusqlite::Result<bool> {
        Ok(self.conn.execute("UPDATE segments SET synced = 1 WHERE id = ?1", [id])? == 1)
    }

    /// Records an eviction before the file is deleted, so a crash in between
    /// leaves an orphan file (deleted at the next start), never a row without a file.
    pub fn mark_evicted(&mut self, id: &str, now_unix_ns: u64) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        let (bytes, synced): (i64, bool) =
            tx.query_row("SELECT bytes, synced FROM segments WHERE id = ?1", [id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        tx.execute(
            "UPDATE segments SET state = 'evicted', evicted_unix_ns = ?2, evicted_unsynced = ?3 WHERE id = ?1",
            params![id, now_unix_ns as i64, !synced],
        )?;
        if !synced {
            add(&tx, LOST_SEGMENTS, 1)?;
            add(&tx, LOST_BYTES, bytes)?;
        }
        tx.commit()
    }

    pub fn set_state(&self, id: &str, state: SegmentState) -> rusqlite::Result<()> {
        self.conn.execute("UPDATE segments SET state = ?2 WHERE id = ?1", params![id, state.as_str()])?;
        Ok(())
    }

    pub fn bump(&self, name: &str, by: i64) -> rusqlite::Result<()> {
        add(&self.conn, name, by)
    }

    pub fn counter(&self, name: &str) -> rusqlite::Result<u64> {
        let v: Option<i64> =
            self.conn.query_row("SELECT value FROM counters WHERE name = ?1", [name], |r| r.get(0)).optional()?;
        Ok(v.unwrap_or(0) as u64)
    }

    /// Queues a log batch built by `build(seq)` under the next sequence number,
    /// in one transaction: a sequence number is never handed out twice.
    pub fn outbox_push(
        &mut self,
        kind: u8,
        created_unix_ns: u64,
        build: impl FnOnce(u64) -> Vec<u8>,
    ) -> rusqlite::Result<u64> {
        let tx = self.conn.transaction()?;
        add(&tx, BATCH_SEQ, 1)?;
        let seq: i64 = tx.query_row("SELECT value FROM counters WHERE name = ?1", [BATCH_SEQ], |r| r.get(0))?;
        let payload = build(seq as u64);
        tx.execute(
            "INSERT INTO outbox (seq, kind, created_unix_ns, payload) VALUES (?1, ?2, ?3, ?4)",
            params![seq, kind, created_unix_ns as i64, payload],
        )?;
        tx.commit()?;
        Ok(seq as u64)
    }

    /// Up to `limit` queued batches, highest priority (lowest kind) then oldest
    /// first, skipping those with `seq` in `skip`.
    pub fn outbox_next(
        &self,
        skip: &std::collections::HashSet<u64>,
        limit: usize,
    ) -> rusqlite::Result<Vec<(u64, u8, Vec<u8>)>> {
        let mut stmt = self.conn.prepare_cached("SELECT seq, kind, payload FROM outbox ORDER BY kind, seq")?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let seq = r.get::<_, i64>(0)? as u64;
            if skip.contains(&seq) {
                continue;
            }
            out.push((seq, r.get(1)?, r.get(2)?));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// The broker acknowledged these batches: they leave the outbox, in one
    /// transaction (one sync for a run of acknowledgements, not one each).
    pub fn outbox_ack(&mut self, seqs: &[u64]) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut delete = tx.prepare_cached("DELETE FROM outbox WHERE seq = ?1")?;
            for seq in seqs {
                delete.execute([*seq as i64])?;
            }
        }
        tx.commit()
    }

    /// (batches, bytes) waiting.
    pub fn outbox_len(&self) -> rusqlite::Result<(u64, u64)> {
        self.conn.query_row("SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox", [], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
        })
    }

    /// Keeps the outbox under `max_bytes` by dropping the oldest bulk-log
    /// batches (incidents and health are kept), counting them. Returns how many.
    pub fn outbox_trim(&mut self, max_bytes: u64, logs_kind: u8) -> rusqlite::Result<u64> {
        let (_, mut bytes) = self.outbox_len()?;
        let mut dropped = 0u64;
        while bytes > max_bytes {
            let oldest: Option<(i64, i64)> = self
                .conn
                .query_row(
                    "SELECT seq, LENGTH(payload) FROM outbox WHERE kind = ?1 ORDER BY seq LIMIT 1",
                    [logs_kind],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let Some((seq, len)) = oldest else { break };
            self.conn.execute("DELETE FROM outbox WHERE seq = ?1", [seq])?;
            bytes = bytes.saturating_sub(len as u64);
            dropped += 1;
        }
        if dropped > 0 {
            self.bump(OUTBOX_DROPPED, dropped as i64)?;
        }
        Ok(dropped)
    }
}

fn add(conn: &Connection, name: &str, by: i64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO counters (name, value) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET value = value + ?2",
        params![name, by],
    )?;
    Ok(())
}
