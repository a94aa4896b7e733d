//! [`AuditSink`]: one JSON object per line, to stdout or to a size-rotated file.
//!
//! Rotation: before a line that would take the current file past `max_bytes`, the file is
//! closed and renamed `path.1` (after `path.1` → `path.2`, …; `path.keep` is removed), and a
//! new `path` is created — so at most `keep` old files exist, a line is never split between
//! files, and each file stays within `max_bytes` unless one line alone is larger. Every file is
//! created with mode 0600 (and set to 0600 if it existed). Writes are buffered; a background
//! thread flushes what is buffered at least every second, and [`AuditSink::flush`] and drop
//! flush too. A failed write or rotation is counted ([`AuditSink::errors`]), never fatal: the
//! records of that write are lost, the next write tries again.
use std::{
    fs::{self, File, OpenOptions},
    io::{self, BufWriter, Stdout, Write},
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use super::{AuditError, AuditRecord};

/// How often buffered lines are flushed at the latest.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(500);

enum Out {
    Stdout(BufWriter<Stdout>),
    File {
        path: PathBuf,
        max_bytes: u64,
        keep: usize,
        /// None after a failed rotation: reopened on the next write.
        file: Option<BufWriter<File>>,
        size: u64,
    },
}

struct Shared {
    out: Mutex<Out>,
    errors: AtomicU64,
    records: AtomicU64,
}

/// Writes audit records, one JSON object per line. `Send + Sync`: share it behind an `Arc`
/// or a reference.
pub struct AuditSink {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for AuditSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditSink")
            .field("records", &self.records())
            .field("errors", &self.errors())
            .finish()
    }
}

fn open(path: &Path) -> Result<(File, u64), AuditError> {
    let err = |source| AuditError::Open {
        path: path.to_owned(),
        source,
    };
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    // An existing file keeps its mode on open: make it private too.
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(err)?;
    let size = file.metadata().map_err(err)?.len();
    Ok((file, size))
}

/// `path.n`
pub fn rotated_path(path: &Path, n: usize) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

fn rotate(path: &Path, keep: usize) -> Result<(), AuditError> {
    let err = |source| AuditError::Rotate {
        path: path.to_owned(),
        source,
    };
    let ignore_missing = |r: io::Result<()>| match r {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(err(e)),
        _ => Ok(()),
    };
    if keep == 0 {
        return ignore_missing(fs::remove_file(path));
    }
    ignore_missing(fs::remove_file(rotated_path(path, keep)))?;
    for n in (1..keep).rev() {
        ignore_missing(fs::rename(rotated_path(path, n), rotated_path(path, n + 1)))?;
    }
    ignore_missing(fs::rename(path, rotated_path(path, 1)))
}

impl Out {
    fn write_line(&mut self, line: &[u8]) -> Result<(), AuditError> {
        match self {
            Out::Stdout(w) => w.write_all(line).map_err(AuditError::Write),
            Out::File {
                path,
                max_bytes,
                keep,
                file,
                size,
            } => {
                let len = line.len() as u64;
                if file.is_some() && *size > 0 && *size + len > *max_bytes {
                    if let Some(mut w) = file.take() {
                        w.flush().map_err(AuditError::Write)?;
                    }
                    rotate(path, *keep)?;
                }
                if file.is_none() {
                    let (f, existing) = open(path)?;
                    *file = Some(BufWriter::with_capacity(64 << 10, f));
                    *size = existing;
                    if existing > 0 && existing + len > *max_bytes {
                        // Reopened a full file (after an error): rotate it first.
                        *file = None;
                        rotate(path, *keep)?;
                        let (f, _) = open(path)?;
                        *file = Some(BufWriter::with_capacity(64 << 10, f));
                        *size = 0;
                    }
                }
                let w = file.as_mut().expect("opened above");
                w.write_all(line).map_err(AuditError::Write)?;
                *size += len;
                Ok(())
            }
        }
    }

    fn flush(&mut self) -> Result<(), AuditError> {
        match self {
            Out::Stdout(w) => w.flush(),
            Out::File { file: Some(w), .. } => w.flush(),
            Out::File { file: None, .. } => Ok(()),
        }
        .map_err(AuditError::Write)
    }
}

impl AuditSink {
    /// Records to standard output.
    pub fn stdout() -> Self {
        Self::start(Out::Stdout(BufWriter::new(io::stdout())))
    }

    /// Records to `path`, rotated when it would exceed `max_bytes`, keeping `keep` old files.
    /// Opens (creates, mode 0600) the file now so a bad path is reported at once.
    pub fn file(path: impl Into<PathBuf>, max_bytes: u64, keep: usize) -> Result<Self, AuditError> {
        if max_bytes == 0 {
            return Err(AuditError::BadMaxBytes);
        }
        let path = path.into();
        let (f, size) = open(&path)?;
        Ok(Self::start(Out::File {
            path,
            max_bytes,
            keep,
            file: Some(BufWriter::with_capacity(64 << 10, f)),
            size,
        }))
    }

    fn start(out: Out) -> Self {
        let shared = Arc::new(Shared {
            out: Mutex::new(out),
            errors: AtomicU64::new(0),
            records: AtomicU64::new(0),
        });
        let weak: Weak<Shared> = Arc::downgrade(&shared);
        // The flusher ends once the sink is gone.
        let spawned = std::thread::Builder::new()
            .name("audit-flush".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(FLUSH_INTERVAL);
                    let Some(s) = weak.upgrade() else { return };
                    s.flush_counted();
                }
            });
        if spawned.is_err() {
            shared.errors.fetch_add(1, Ordering::Relaxed);
        }
        AuditSink { shared }
    }

    /// Appends one record (one line). A failure is counted in [`errors`](Self::errors).
    pub fn write(&self, record: &AuditRecord) {
        let mut line = record.to_json_line().into_bytes();
        line.push(b'\n');
        let mut out = self.shared.lock();
        match out.write_line(&line) {
            Ok(()) => {
                self.shared.records.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.shared.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Appends every record of `records`.
    pub fn write_all<'r>(&self, records: impl IntoIterator<Item = &'r AuditRecord>) {
        for r in records {
            self.write(r);
        }
    }

    /// Writes out what is buffered. A failure is also counted.
    pub fn flush(&self) -> Result<(), AuditError> {
        let r = self.shared.lock().flush();
        if r.is_err() {
            self.shared.errors.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    /// Records written (into the buffer) so far.
    pub fn records(&self) -> u64 {
        self.shared.records.load(Ordering::Relaxed)
    }

    /// Failed writes, rotations and flushes so far.
    pub fn errors(&self) -> u64 {
        self.shared.errors.load(Ordering::Relaxed)
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Out> {
        self.out.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn flush_counted(&self) {
        if self.lock().flush().is_err() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for AuditSink {
    fn drop(&mut self) {
        self.shared.flush_counted();
    }
}
