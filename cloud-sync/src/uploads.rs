//! Bulk uploads of whole recording segments over HTTP, resumable.
//!
//! A robot asks where its upload of a segment stands (`GET`), sends the rest in
//! chunks, each with its SHA-256 (`PUT …?offset=N`, appended and fsynced before
//! the reply, so the acknowledged offset survives a crash of either side), then
//! asks to complete it with the whole file's size and SHA-256 (`POST
//! …/complete`). Only a verified segment goes into the object store and the
//! catalog; only then does the robot mark it synced.
//!
//! Partial uploads live under `DATA_DIR/uploads/ROBOT/SEGMENT.part`.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;

pub use gantry_config::wire::{Completion, Progress, CHUNK_SHA256};

use crate::store::{object_key, CloudCatalog, UploadedSegment};

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("not a valid robot or segment id")]
    BadId,
    /// The chunk does not start where the upload stands.
    #[error("expected offset {0}")]
    Offset(u64),
    #[error("chunk SHA-256 does not match its {CHUNK_SHA256} header")]
    ChunkChecksum,
    #[error("segment is {got} bytes with SHA-256 {got_sha}; the robot announced {want} bytes with {want_sha}")]
    Mismatch { got: u64, got_sha: String, want: u64, want_sha: String },
    #[error("{0:#}")]
    Internal(anyhow::Error),
}

impl From<std::io::Error> for UploadError {
    fn from(e: std::io::Error) -> Self {
        UploadError::Internal(e.into())
    }
}

#[derive(Debug, Default)]
pub struct UploadStats {
    pub chunks: AtomicU64,
    pub bytes: AtomicU64,
    pub chunks_refused: AtomicU64,
    pub completed: AtomicU64,
    pub verification_failures: AtomicU64,
}

type KeyLock = Arc<tokio::sync::Mutex<()>>;

pub struct Uploads {
    dir: PathBuf,
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    catalog: Arc<dyn CloudCatalog>,
    limits: crate::quality::Limits,
    /// One request at a time per (robot, segment).
    locks: Mutex<HashMap<(String, String), KeyLock>>,
    pub stats: UploadStats,
}

fn valid(robot: &str, segment: &str) -> Result<(), UploadError> {
    use gantry_config::wire::valid_robot_id;
    if valid_robot_id(robot) && valid_robot_id(segment) {
        Ok(())
    } else {
        Err(UploadError::BadId)
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    gantry_config::wire::sha256_hex(bytes)
}

impl Uploads {
    pub fn new(
        data_dir: &Path,
        store: Arc<dyn ObjectStore>,
        prefix: ObjectPath,
        catalog: Arc<dyn CloudCatalog>,
        limits: crate::quality::Limits,
    ) -> anyhow::Result<Self> {
        let dir = data_dir.join("uploads");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self {
            dir,
            store,
            prefix,
            catalog,
            limits,
            locks: Mutex::new(HashMap::new()),
            stats: UploadStats::default(),
        })
    }

    fn part(&self, robot: &str, segment: &str) -> PathBuf {
        self.dir.join(robot).join(format!("{segment}.part"))
    }

    fn lock(&self, robot: &str, segment: &str) -> KeyLock {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry((robot.to_string(), segment.to_string())).or_default().clone()
    }

    pub async fn progress(&self, robot: &str, segment: &str) -> Result<Progress, UploadError> {
        valid(robot, segment)?;
        if self.catalog.upload(robot, segment).map_err(UploadError::Internal)?.is_some() {
            return Ok(Progress { offset: 0, complete: true });
        }
        let offset = std::fs::metadata(self.part(robot, segment)).map_or(0, |m| m.len());
        Ok(Progress { offset, complete: false })
    }

    /// Appends `chunk` at `offset`; returns the new offset. A chunk already
    /// received (a retry after a lost reply) is accepted without being written again.
    pub async fn append(
        &self,
        robot: &str,
        segment: &str,
        offset: u64,
        chunk: &[u8],
        chunk_sha256: &str,
    ) -> Result<u64, UploadError> {
        valid(robot, segment)?;
        if !sha256_hex(chunk).eq_ignore_ascii_case(chunk_sha256) {
            self.stats.chunks_refused.fetch_add(1, Relaxed);
            return Err(UploadError::ChunkChecksum);
        }
        let lock = self.lock(robot, segment);
        let _guard = lock.lock().await;
        let path = self.part(robot, segment);
        let (chunk, path) = (chunk.to_vec(), path.clone());
        let n = chunk.len() as u64;
        let (end, written) = tokio::task::spawn_blocking(move || -> Result<(u64, bool), UploadError> {
            std::fs::create_dir_all(path.parent().expect("part files live in a robot directory"))?;
            let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
            let len = file.metadata()?.len();
            if offset + chunk.len() as u64 == len && offset < len {
                return Ok((len, false));
            }
            if offset != len {
                return Err(UploadError::Offset(len));
            }
            file.write_all(&chunk)?;
            file.sync_data()?;
            Ok((len + chunk.len() as u64, true))
        })
        .await
        .map_err(|e| UploadError::Internal(e.into()))??;
        if written {
            self.stats.chunks.fetch_add(1, Relaxed);
            self.stats.bytes.fetch_add(n, Relaxed);
        }
        Ok(end)
    }

    /// Verifies the received file against `c`; stores and catalogues it. A
    /// mismatch discards the partial file (the robot starts over).
    pub async fn complete(&self, robot: &str, segment: &str, c: &Completion) -> Result<UploadedSegment, UploadError> {
        valid(robot, segment)?;
        let lock = self.lock(robot, segment);
        let _guard = lock.lock().await;
        if let Some(done) = self.catalog.upload(robot, segment).map_err(UploadError::Internal)? {
            return Ok(done);
        }
        let path = self.part(robot, segment);
        let p = path.clone();
        let (bytes, sha) = tokio::task::spawn_blocking(move || gantry_config::wire::hash_file(&p))
            .await
            .map_err(|e| UploadError::Internal(e.into()))??;
        if bytes != c.bytes || !sha.eq_ignore_ascii_case(&c.sha256) {
            self.stats.verification_failures.fetch_add(1, Relaxed);
            let _ = std::fs::remove_file(&path);
            tracing::warn!(robot, segment, bytes, want = c.bytes, "uploaded segment failed verification; discarded");
            return Err(UploadError::Mismatch { got: bytes, got_sha: sha, want: c.bytes, want_sha: c.sha256.clone() });
        }
        // The quality checks, images included (only bulk segments carry them).
        let data = tokio::fs::read(&path).await?;
        let flags = match crate::quality::parse(&data) {
            Ok(parsed) => crate::quality::batch_flags(&parsed, &self.limits),
            Err(_) => vec![crate::quality::MALFORMED.to_string()],
        };
        drop(data);
        let key = object_key(&self.prefix, "segments", robot, c.start_unix_ns, segment);
        // Streamed (multipart on S3): segments are hundreds of megabytes.
        let mut writer = object_store::buffered::BufWriter::new(self.store.clone(), key.clone());
        let mut file = tokio::fs::File::open(&path).await?;
        tokio::io::copy(&mut file, &mut writer).await?;
        tokio::io::AsyncWriteExt::shutdown(&mut writer).await?;
        let row = UploadedSegment {
            robot_id: robot.to_string(),
            segment_id: segment.to_string(),
            object_key: key.to_string(),
            bytes,
            sha256: sha,
            messages: c.messages,
            start_unix_ns: c.start_unix_ns,
            end_unix_ns: c.end_unix_ns,
            received_unix_ns: crate::unix_now_ns(),
            flags,
        };
        self.catalog.insert_upload(&row).map_err(UploadError::Internal)?;
        let _ = std::fs::remove_file(&path);
        self.stats.completed.fetch_add(1, Relaxed);
        tracing::info!(robot, segment, bytes, "segment uploaded and verified");
        Ok(row)
    }
}
