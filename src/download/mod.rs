//! Streaming downloads that never leave a corrupt file behind.
//!
//! Bytes go to `<dest>.part` while sha256 runs over them in the same pass. A transfer that breaks
//! off resumes with an HTTP `Range` request (the part already on disk is hashed first, so the
//! checksum still covers every byte), also across restarts of the process. The file takes its
//! final name only once the checksum matches; a mismatch removes it.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::error::{Coded, ErrorCode, io_suggestion};

/// Automatic resumptions of one download after the connection breaks mid-body or stalls.
const MAX_RESUMES: u32 = 3;
/// The wait before the first resumption; it doubles for each one after.
const RESUME_BACKOFF: Duration = Duration::from_millis(250);
/// A connection that sends no byte for this long is given up and resumed.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes of the file's start handed to [`Options::check_start`].
const HEAD: usize = 8;
/// Bytes handed to the writer thread at a time.
const BATCH: usize = 1 << 20;
/// Progress callbacks are throttled to at most one per interval (plus the final one).
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("invalid URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("{url} answered HTTP {status}")]
    Http { url: String, status: u16 },
    #[error("download of {url} failed: {reason}")]
    Network { url: String, reason: String },
    #[error("{url} is not what was expected: {reason}")]
    Rejected { url: String, reason: String },
    #[error("checksum mismatch for {url}: expected sha256 {expected}, got {actual}")]
    Checksum {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl Coded for DownloadError {
    fn code(&self) -> ErrorCode {
        match self {
            DownloadError::BadUrl { .. } => ErrorCode::DownloadBadUrl,
            DownloadError::Http { .. } => ErrorCode::DownloadHttpError,
            DownloadError::Network { .. } => ErrorCode::DownloadFailed,
            DownloadError::Rejected { .. } => ErrorCode::DownloadRejected,
            DownloadError::Checksum { .. } => ErrorCode::ChecksumError,
            DownloadError::Io { .. } => ErrorCode::FileSystemError,
        }
    }

    fn suggestion(&self) -> Option<String> {
        Some(match self {
            DownloadError::BadUrl { .. } => "Use an absolute http:// or https:// URL".into(),
            DownloadError::Http { status: 404, .. } => {
                "Check the URL: the file does not exist there".into()
            }
            DownloadError::Http {
                status: 401 | 403, ..
            } => "The server refused access: check the URL and any token it needs".into(),
            DownloadError::Http { .. } | DownloadError::Network { .. } => {
                "Check the network connection and try again; the download resumes where it stopped"
                    .into()
            }
            DownloadError::Rejected { .. } => {
                "Check that the URL points at a model file of the expected format".into()
            }
            DownloadError::Checksum { .. } => {
                "The file was removed; try again, and if it keeps failing the source has changed"
                    .into()
            }
            DownloadError::Io { source, .. } => io_suggestion(source).into(),
        })
    }

    fn details(&self) -> Map<String, Value> {
        let v = match self {
            DownloadError::BadUrl { url, .. }
            | DownloadError::Network { url, .. }
            | DownloadError::Rejected { url, .. } => json!({ "url": url }),
            DownloadError::Http { url, status } => json!({ "url": url, "status": status }),
            DownloadError::Checksum {
                url,
                expected,
                actual,
            } => {
                json!({ "url": url, "expected": expected, "actual": actual })
            }
            DownloadError::Io { path, .. } => json!({ "path": path }),
        };
        v.as_object().cloned().unwrap_or_default()
    }
}

/// Bytes so far and, when the server says, in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub downloaded: u64,
    pub total: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    pub path: PathBuf,
    pub bytes: u64,
    pub sha256: String,
    /// Where the last attempt started (0 for a download from scratch).
    pub resumed_from: u64,
}

/// One HTTP client per process: connection pools and TLS set-up are shared.
pub fn http_client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        // Another library may have installed a provider already; either one serves.
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::builder()
            .user_agent(concat!("genai-electron/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(60))
            .build()
            .expect("an HTTP client with default settings always builds")
    })
}

pub fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    dest.with_file_name(name)
}

/// Judges the first bytes of a file: `Err` says why they are not what was expected.
pub type StartCheck = dyn Fn(&[u8]) -> Result<(), String> + Send + Sync;

/// What a download checks, and how long it waits for bytes.
pub struct Options<'a> {
    /// sha256 (hex) the whole file must have.
    pub sha256: Option<&'a str>,
    /// No byte for this long: the connection is dropped and the download resumes.
    pub stall_timeout: Duration,
    /// Judges the file's first bytes as soon as they are there (on resume, those of the part on
    /// disk): an error stops the transfer at once and removes the part.
    pub check_start: Option<&'a StartCheck>,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            sha256: None,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            check_start: None,
        }
    }
}

/// Downloads `url` to `dest`, checking `sha256` (hex) when given. Resumes from `<dest>.part`.
pub async fn download(
    url: &str,
    dest: &Path,
    sha256: Option<&str>,
    on_progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Downloaded, DownloadError> {
    let options = Options {
        sha256,
        ..Options::default()
    };
    download_with(url, dest, &options, on_progress).await
}

/// [`download`] with every option.
pub async fn download_with(
    url: &str,
    dest: &Path,
    options: &Options<'_>,
    on_progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Downloaded, DownloadError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| DownloadError::BadUrl {
        url: url.into(),
        reason: e.to_string(),
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(DownloadError::BadUrl {
            url: url.into(),
            reason: format!("unsupported scheme {:?}", parsed.scheme()),
        });
    }
    let part = part_path(dest);
    let mut attempt = 0;
    loop {
        match transfer(url, &part, options, on_progress).await {
            Ok(outcome) => return finish(url, dest, &part, options.sha256, outcome).await,
            Err(Failure::Retryable(reason)) if attempt < MAX_RESUMES => {
                attempt += 1;
                tracing::info!(
                    "download of {url} broke off ({reason}); resuming, attempt {attempt}"
                );
                tokio::time::sleep(RESUME_BACKOFF * (1 << (attempt - 1))).await;
            }
            Err(Failure::Retryable(reason)) => {
                return Err(DownloadError::Network {
                    url: url.into(),
                    reason,
                });
            }
            Err(Failure::Fatal(err)) => return Err(err),
        }
    }
}

enum Failure {
    /// The connection failed; the part on disk is intact and can be resumed.
    Retryable(String),
    Fatal(DownloadError),
}

struct Transferred {
    bytes: u64,
    sha256: String,
    resumed_from: u64,
}

async fn transfer(
    url: &str,
    part: &Path,
    options: &Options<'_>,
    on_progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Transferred, Failure> {
    let io_err = |source: io::Error| {
        Failure::Fatal(DownloadError::Io {
            path: part.to_path_buf(),
            source,
        })
    };
    let existing = tokio::fs::metadata(part)
        .await
        .map(|m| m.len())
        .unwrap_or(0);
    let mut request = http_client().get(url);
    if existing > 0 {
        request = request.header(reqwest::header::RANGE, format!("bytes={existing}-"));
    }
    let stalled = || format!("no data for {:.1} s", options.stall_timeout.as_secs_f64());
    let response = tokio::time::timeout(options.stall_timeout, request.send())
        .await
        .map_err(|_| Failure::Retryable(stalled()))?
        .map_err(|e| Failure::Retryable(e.to_string()))?;
    let status = response.status();
    let resume_from = match status.as_u16() {
        206 if content_range_start(&response) == Some(existing) => existing,
        // Range ignored (200) or answered for another offset: start over.
        200 | 206 => 0,
        416 if existing > 0 => {
            // Nothing after our offset: the part may be complete. Start over if it is not.
            tokio::fs::remove_file(part).await.map_err(io_err)?;
            return Err(Failure::Retryable(
                "server refused the resume offset".into(),
            ));
        }
        code => {
            return Err(Failure::Fatal(DownloadError::Http {
                url: url.into(),
                status: code,
            }));
        }
    };
    let total = response.content_length().map(|len| len + resume_from);

    let mut hasher = Sha256::new();
    let mut head = Vec::with_capacity(HEAD);
    let file = if resume_from > 0 {
        hash_prefix(part, resume_from, &mut hasher, &mut head)
            .await
            .map_err(io_err)?;
        tokio::fs::OpenOptions::new()
            .append(true)
            .open(part)
            .await
            .map_err(io_err)?
    } else {
        if let Some(parent) = part.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(io_err)?;
        }
        tokio::fs::File::create(part).await.map_err(io_err)?
    };
    let sink = Sink::spawn(file.into_std().await, hasher);

    let mut downloaded = resume_from;
    let mut last_report = Instant::now();
    on_progress(Progress { downloaded, total });
    let mut body = response.bytes_stream();
    let mut broken = None;
    let mut rejected = judge_start(options, &head, false);
    // Network chunks are small (~16 KiB); batching them to 1 MiB wakes the writer a thousand
    // times per GiB instead of sixty thousand.
    let mut batch = bytes::BytesMut::with_capacity(BATCH);
    while rejected.is_none() {
        let chunk = match tokio::time::timeout(options.stall_timeout, body.next()).await {
            Ok(Some(Ok(chunk))) => chunk,
            Ok(None) => break,
            Ok(Some(Err(err))) => {
                broken = Some(err.to_string());
                break;
            }
            Err(_) => {
                broken = Some(stalled());
                break;
            }
        };
        if head.len() < HEAD {
            let take = (HEAD - head.len()).min(chunk.len());
            head.extend_from_slice(&chunk[..take]);
            rejected = judge_start(options, &head, false);
            if rejected.is_some() {
                break;
            }
        }
        downloaded += chunk.len() as u64;
        batch.extend_from_slice(&chunk);
        if batch.len() >= BATCH && sink.tx.send(batch.split().freeze()).await.is_err() {
            // The writer stopped: its error says why.
            break;
        }
        if last_report.elapsed() >= PROGRESS_INTERVAL {
            on_progress(Progress { downloaded, total });
            last_report = Instant::now();
        }
    }
    if !batch.is_empty() {
        let _ = sink.tx.send(batch.freeze()).await;
    }
    let hasher = match sink.finish().await {
        Ok(hasher) => hasher,
        Err(source) => {
            // A full disk leaves nothing worth resuming.
            let _ = tokio::fs::remove_file(part).await;
            return Err(io_err(source));
        }
    };
    if let Some(reason) = rejected.or_else(|| judge_start(options, &head, broken.is_none())) {
        let _ = tokio::fs::remove_file(part).await;
        return Err(Failure::Fatal(DownloadError::Rejected {
            url: url.into(),
            reason,
        }));
    }
    if let Some(reason) = broken {
        return Err(Failure::Retryable(reason));
    }
    if let Some(total) = total.filter(|&t| t != downloaded) {
        return Err(Failure::Retryable(format!(
            "connection closed at {downloaded} of {total} bytes"
        )));
    }
    on_progress(Progress {
        downloaded,
        total: Some(downloaded),
    });
    Ok(Transferred {
        bytes: downloaded,
        sha256: hex::encode(hasher.finalize()),
        resumed_from: resume_from,
    })
}

/// Hashing and writing run on a blocking thread of their own, fed through a bounded channel, so
/// they overlap with receiving the next bytes (and never run on an async worker).
struct Sink {
    tx: tokio::sync::mpsc::Sender<bytes::Bytes>,
    task: tokio::task::JoinHandle<io::Result<Sha256>>,
}

impl Sink {
    fn spawn(file: std::fs::File, mut hasher: Sha256) -> Sink {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(8);
        let task = tokio::task::spawn_blocking(move || {
            let mut out = file;
            while let Some(chunk) = rx.blocking_recv() {
                hasher.update(&chunk);
                io::Write::write_all(&mut out, &chunk)?;
            }
            // No fsync: waiting for the disk would halve throughput for multi-GB files. The
            // checksum covers the bytes written, and listing checks each file's recorded size,
            // so a file cut short by a power loss is never taken for a model.
            Ok(hasher)
        });
        Sink { tx, task }
    }

    async fn finish(self) -> io::Result<Sha256> {
        drop(self.tx);
        self.task.await.map_err(io::Error::other)?
    }
}

fn content_range(response: &reqwest::Response) -> Option<&str> {
    response
        .headers()
        .get(reqwest::header::CONTENT_RANGE)?
        .to_str()
        .ok()?
        .strip_prefix("bytes ")
}

/// The first byte of a 206 response (`Content-Range: bytes START-END/TOTAL`).
pub(crate) fn content_range_start(response: &reqwest::Response) -> Option<u64> {
    content_range(response)?
        .split('-')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// The whole file's size of a 206 response.
pub(crate) fn content_range_total(response: &reqwest::Response) -> Option<u64> {
    content_range(response)?
        .rsplit('/')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// Hashes the first `len` bytes of the part on disk, keeping its first [`HEAD`] bytes in `head`.
async fn hash_prefix(
    part: &Path,
    len: u64,
    hasher: &mut Sha256,
    head: &mut Vec<u8>,
) -> io::Result<()> {
    let mut file = tokio::fs::File::open(part).await?.take(len);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        let take = (HEAD - head.len()).min(n);
        head.extend_from_slice(&buf[..take]);
        hasher.update(&buf[..n]);
    }
}

/// The start check's verdict once [`HEAD`] bytes are there, or at the end of a shorter file.
fn judge_start(options: &Options<'_>, head: &[u8], at_end: bool) -> Option<String> {
    let check = options.check_start?;
    if head.len() < HEAD && !at_end {
        return None;
    }
    check(head).err()
}

async fn finish(
    url: &str,
    dest: &Path,
    part: &Path,
    expected: Option<&str>,
    outcome: Transferred,
) -> Result<Downloaded, DownloadError> {
    if let Some(expected) = expected
        && !expected.eq_ignore_ascii_case(&outcome.sha256)
    {
        let _ = tokio::fs::remove_file(part).await;
        return Err(DownloadError::Checksum {
            url: url.into(),
            expected: expected.to_ascii_lowercase(),
            actual: outcome.sha256,
        });
    }
    tokio::fs::rename(part, dest)
        .await
        .map_err(|source| DownloadError::Io {
            path: dest.to_path_buf(),
            source,
        })?;
    Ok(Downloaded {
        path: dest.to_path_buf(),
        bytes: outcome.bytes,
        sha256: outcome.sha256,
        resumed_from: outcome.resumed_from,
    })
}

/// sha256 of a file, hex; runs on the blocking pool.
pub async fn sha256_file(path: &Path) -> io::Result<String> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(path)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = io::Read::read(&mut file, &mut buf)?;
            if n == 0 {
                return Ok(hex::encode(hasher.finalize()));
            }
            hasher.update(&buf[..n]);
        }
    })
    .await
    .map_err(io::Error::other)?
}

#[cfg(test)]
mod tests;
