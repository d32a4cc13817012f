//! Where a managed server's lines go: a ring for `getLogs(n)`, a rotating file, and a listener.
//!
//! A [`ServerLog`] receives two kinds of line: the server's own output, as it printed it, and
//! the library's lines about that server (start, stop, restarts, errors), written with
//! `tracing` inside the server's span and formatted `[time] [LEVEL] message` by [`ServerLogLayer`].
//! So `getLogs()` and the log file show what the backend said and what the library did, in order.
//! The library's lines outside any server (downloads, the model store, GPU detection) go to the
//! [`library`] log, `logs/genai-electron.log` in the data folder.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use file_rotate::suffix::AppendCount;
use file_rotate::{ContentLimit, FileRotate, compression::Compression};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::events::EventSink;
use crate::sync::lock;

const RING_LINES: usize = 2000;
/// A log file rotates once it has passed this size; `.1` … `.3` keep older output.
pub const LOG_FILE_LIMIT: usize = 5 << 20;
/// Sets another size (bytes, at least [`MIN_LOG_FILE_LIMIT`]) for the log files opened after.
pub const LOG_FILE_LIMIT_ENV: &str = "GENAI_ELECTRON_LOG_FILE_LIMIT";
const MIN_LOG_FILE_LIMIT: usize = 4096;

/// The size past which a log file rotates: [`LOG_FILE_LIMIT_ENV`] where it is a number, else
/// [`LOG_FILE_LIMIT`].
fn log_file_limit() -> usize {
    limit_from(std::env::var(LOG_FILE_LIMIT_ENV).ok().as_deref())
}

fn limit_from(setting: Option<&str>) -> usize {
    setting
        .and_then(|v| v.trim().parse::<usize>().ok())
        .map_or(LOG_FILE_LIMIT, |bytes| bytes.max(MIN_LOG_FILE_LIMIT))
}
const LOG_ARCHIVES: usize = 3;
/// The span field that routes the library's lines to a server's log: its [`ServerLog::id`].
pub const SPAN_FIELD: &str = "server_log";

/// Lines of output, newest last.
#[derive(Default)]
pub struct LogRing {
    lines: Mutex<VecDeque<String>>,
}

impl LogRing {
    pub fn push(&self, line: String) {
        let mut lines = lock(&self.lines);
        if lines.len() == RING_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    pub fn last(&self, n: usize) -> Vec<String> {
        let lines = lock(&self.lines);
        lines
            .iter()
            .skip(lines.len().saturating_sub(n))
            .cloned()
            .collect()
    }

    pub fn clear(&self) {
        lock(&self.lines).clear();
    }
}

/// A size-rotated log file, kept open between lines. Write failures are ignored: logging never
/// takes a server down.
pub struct LogFile {
    path: PathBuf,
    writer: Mutex<Option<FileRotate<AppendCount>>>,
}

impl LogFile {
    /// Opens (or creates) the file; `None` when its folder cannot be made.
    pub fn open(path: &Path) -> Option<LogFile> {
        // file-rotate panics when it cannot create the folder: make sure it exists first.
        std::fs::create_dir_all(path.parent()?).ok()?;
        let writer = catch(|| {
            FileRotate::new(
                path,
                AppendCount::new(LOG_ARCHIVES),
                ContentLimit::BytesSurpassed(log_file_limit()),
                Compression::None,
                None,
            )
        })?;
        Some(LogFile {
            path: path.to_path_buf(),
            writer: Mutex::new(Some(writer)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn append(&self, line: &str) {
        use std::io::Write;
        let mut writer = lock(&self.writer);
        let Some(file) = writer.as_mut() else { return };
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        // A rotation whose folder has vanished panics inside the crate: stop writing this file
        // rather than take the caller (a server's actor or output reader) down with it.
        if catch(|| file.write_all(&bytes)).is_none() {
            *writer = None;
        }
    }
}

fn catch<T>(f: impl FnOnce() -> T) -> Option<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok()
}

/// One managed server's log: ring, file and listener, fed by its output and by the library.
pub struct ServerLog {
    id: u64,
    ring: LogRing,
    file: Mutex<Option<Arc<LogFile>>>,
    listener: Option<EventSink<String>>,
}

impl ServerLog {
    pub fn new(listener: Option<EventSink<String>>) -> Arc<ServerLog> {
        install_tracing();
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let log = Arc::new(ServerLog {
            id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            ring: LogRing::default(),
            file: Mutex::new(None),
            listener,
        });
        lock(registry()).insert(log.id, Arc::downgrade(&log));
        log
    }

    /// The value of [`SPAN_FIELD`] that routes `tracing` lines here.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// A span whose events (and its children's) are written to this log.
    pub fn span(&self, server: &'static str) -> tracing::Span {
        tracing::info_span!("server", server, server_log = self.id)
    }

    /// Points the file at `path` (kept open while it stays the same); `None` writes no file.
    pub fn set_file(&self, path: Option<&Path>) {
        let mut file = lock(&self.file);
        if file.as_ref().map(|f| f.path()) == path {
            return;
        }
        *file = path.and_then(LogFile::open).map(Arc::new);
    }

    /// One line of output (or of the library): to the file, the ring, then the listener, so that
    /// whoever hears of a line finds it in `getLogs()`.
    pub fn push(&self, line: String) {
        let file = lock(&self.file).clone();
        if let Some(file) = file {
            file.append(&line);
        }
        match &self.listener {
            Some(listener) => {
                self.ring.push(line.clone());
                listener.emit(line);
            }
            None => self.ring.push(line),
        }
    }

    /// One line of the backend's output, stamped like the library's lines (see
    /// [`backend_line`]).
    pub fn output(&self, line: &str) {
        self.push(backend_line(line));
    }

    pub fn last(&self, n: usize) -> Vec<String> {
        self.ring.last(n)
    }

    pub fn clear(&self) {
        self.ring.clear();
    }
}

impl Drop for ServerLog {
    fn drop(&mut self) {
        lock(registry()).remove(&self.id);
    }
}

/// The log of the library's lines that concern no server. The binding points its file into the
/// data folder (`logs/genai-electron.log`) once it knows where that is.
pub fn library() -> &'static Arc<ServerLog> {
    static LIBRARY: OnceLock<Arc<ServerLog>> = OnceLock::new();
    LIBRARY.get_or_init(|| ServerLog::new(None))
}

fn registry() -> &'static Mutex<HashMap<u64, Weak<ServerLog>>> {
    static LOGS: OnceLock<Mutex<HashMap<u64, Weak<ServerLog>>>> = OnceLock::new();
    LOGS.get_or_init(Default::default)
}

/// Installs the library's subscriber once: its `tracing` lines reach the servers' logs. The
/// addon carries its own copy of `tracing`, so this global is ours alone, never the app's.
fn install_tracing() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        use tracing_subscriber::layer::SubscriberExt;
        let subscriber = tracing_subscriber::registry().with(ServerLogLayer);
        // Already set (a test harness or an embedder of the rlib): their subscriber wins.
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
}

/// The `tracing` layer that writes events inside a server's span to that server's log.
pub struct ServerLogLayer;

/// Stored on a span that names a server log.
struct Target(u64);

impl<S> Layer<S> for ServerLogLayer
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    /// Only the library's own spans, and its events from INFO up: the `tracing` lines of
    /// dependencies (h2 traces every frame of a health check) are never even built.
    fn register_callsite(
        &self,
        meta: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if wanted(meta) {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn enabled(&self, meta: &tracing::Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        wanted(meta)
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut visitor = TargetVisitor(None);
        attrs.record(&mut visitor);
        if let (Some(target), Some(span)) = (visitor.0, ctx.span(id)) {
            span.extensions_mut().insert(Target(target));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let target = ctx.event_scope(event).and_then(|scope| {
            scope
                .from_root()
                .filter_map(|span| span.extensions().get::<Target>().map(|t| t.0))
                .last()
        });
        let log = match target {
            Some(target) => match lock(registry()).get(&target).and_then(Weak::upgrade) {
                Some(log) => log,
                None => return,
            },
            None => library().clone(),
        };
        let mut message = MessageVisitor::default();
        event.record(&mut message);
        // A line's listener may log in turn (an event it could not deliver): that line is
        // dropped rather than looped back into the same listener.
        thread_local!(static PUSHING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
        if PUSHING.replace(true) {
            return;
        }
        log.push(library_line(event.metadata().level(), &message.0));
        PUSHING.set(false);
    }
}

fn wanted(meta: &tracing::Metadata<'_>) -> bool {
    meta.target().starts_with(env!("CARGO_CRATE_NAME"))
        && (meta.is_span() || *meta.level() <= tracing::Level::INFO)
}

/// `[2026-12-02T13:00:00.123Z] [INFO] message`: the library's lines, in the format of
/// genai-electron's `LogManager` (its `parseEntry` reads them).
pub fn library_line(level: &tracing::Level, message: &str) -> String {
    stamped(level.as_str(), message)
}

fn stamped(level: &str, message: &str) -> String {
    format!("[{}] [{level}] {message}", crate::clock::iso_now())
}

/// A backend's output line in the same format: stable-diffusion.cpp's own level (`[ERROR]`,
/// `[WARN ]`, `[INFO ]`, `[DEBUG]`) moves into the stamp; llama.cpp's `error:`/`warning:` lines
/// are ERROR and WARN; everything else is INFO.
pub fn backend_line(line: &str) -> String {
    let trimmed = line.trim_start();
    let marked = [
        ("[ERROR]", "ERROR"),
        ("[WARN ]", "WARN"),
        ("[WARN]", "WARN"),
        ("[INFO ]", "INFO"),
        ("[INFO]", "INFO"),
        ("[DEBUG]", "DEBUG"),
    ]
    .into_iter()
    .find_map(|(marker, level)| Some((level, trimmed.strip_prefix(marker)?.trim_start())));
    let (level, message) = marked.unwrap_or_else(|| {
        let lower = trimmed.get(..8).unwrap_or(trimmed).to_ascii_lowercase();
        let level = if lower.starts_with("error") {
            "ERROR"
        } else if lower.starts_with("warn") {
            "WARN"
        } else {
            "INFO"
        };
        (level, line)
    });
    stamped(level, message)
}

struct TargetVisitor(Option<u64>);

impl Visit for TargetVisitor {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == SPAN_FIELD {
            self.0 = Some(value);
        }
    }

    fn record_debug(&mut self, _field: &Field, _value: &dyn std::fmt::Debug) {}
}

/// The message, then any other fields as `key=value`.
#[derive(Default)]
struct MessageVisitor(String);

impl Visit for MessageVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.insert_str(0, value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0.insert_str(0, &format!("{value:?}"));
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_lines_inside_a_server_span_reach_that_servers_log_only() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let log = ServerLog::new(Some(EventSink::new(move |l| lock(&sink).push(l))));
        let other = ServerLog::new(None);
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("logs").join("s.log");
        log.set_file(Some(&file));
        log.output("backend output");
        log.span("test-server").in_scope(|| {
            tracing::warn!(port = 8080, "restart {} failed", 2);
            tracing::info_span!("inner").in_scope(|| tracing::info!("nested"));
        });
        tracing::info!(marker = 7, "outside any server span");
        let lines = log.last(10);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(
            lines[0].ends_with("] [INFO] backend output"),
            "{}",
            lines[0]
        );
        assert!(lines[1].starts_with("[20"), "{}", lines[1]);
        assert!(
            lines[1].ends_with("] [WARN] restart 2 failed port=8080"),
            "{}",
            lines[1]
        );
        assert!(lines[2].ends_with("] [INFO] nested"), "{}", lines[2]);
        assert!(other.last(10).is_empty());
        assert!(
            library()
                .last(2000)
                .iter()
                .any(|l| l.ends_with("] [INFO] outside any server span marker=7")),
            "lines outside a server reach the library's log"
        );
        assert_eq!(*lock(&seen), lines);
        let written = std::fs::read_to_string(&file).unwrap();
        assert_eq!(written.lines().collect::<Vec<_>>(), lines);
    }

    #[test]
    fn backend_lines_are_stamped_with_their_own_level() {
        let level_and_message = |line: &str| {
            let stamped = backend_line(line);
            let (_, rest) = stamped.split_once("] [").unwrap();
            let (level, message) = rest.split_once("] ").unwrap();
            (level.to_string(), message.to_string())
        };
        let pair = |l: &str, m: &str| (l.to_string(), m.to_string());
        assert_eq!(
            level_and_message("[ERROR] stable-diffusion.cpp:123 - load failed"),
            pair("ERROR", "stable-diffusion.cpp:123 - load failed")
        );
        assert_eq!(
            level_and_message("[WARN ] model.cpp:9 - unknown tensor"),
            pair("WARN", "model.cpp:9 - unknown tensor")
        );
        assert_eq!(
            level_and_message("[DEBUG] ggml_extend.hpp:1 - x"),
            pair("DEBUG", "ggml_extend.hpp:1 - x")
        );
        assert_eq!(
            level_and_message("error: failed to load model 'x.gguf'"),
            pair("ERROR", "error: failed to load model 'x.gguf'")
        );
        assert_eq!(
            level_and_message("srv  update_slots: all slots are idle"),
            pair("INFO", "srv  update_slots: all slots are idle")
        );
        assert!(backend_line("").ends_with("] [INFO] "));
    }

    #[test]
    fn a_listener_that_logs_does_not_loop() {
        let log = ServerLog::new(Some(EventSink::new(|line: String| {
            tracing::warn!("could not deliver {line}");
        })));
        log.span("looping").in_scope(|| tracing::info!("once"));
        let lines = log.last(10);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].ends_with("] [INFO] once"));
    }

    #[test]
    fn log_files_rotate_and_keep_three_archives() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("s.log");
        let log = LogFile::open(&path).unwrap();
        let line = "x".repeat((1 << 20) - 1);
        for _ in 0..(5 * 6 + 3) {
            log.append(&line);
        }
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        // Rotated once past the limit: at most one line over it.
        assert!(size(&path) <= (LOG_FILE_LIMIT + (1 << 20)) as u64);
        for i in 1..=3 {
            assert!(
                size(&tmp.path().join(format!("s.log.{i}"))) > 0,
                "archive {i}"
            );
        }
        assert!(!tmp.path().join("s.log.4").exists());
    }

    #[test]
    fn the_rotation_size_can_be_set_but_not_below_a_floor() {
        assert_eq!(limit_from(None), LOG_FILE_LIMIT);
        assert_eq!(limit_from(Some("65536")), 65536);
        assert_eq!(limit_from(Some("1")), MIN_LOG_FILE_LIMIT);
        assert_eq!(
            limit_from(Some("5MB")),
            LOG_FILE_LIMIT,
            "not a number: the default"
        );
    }

    #[test]
    fn a_log_file_whose_folder_cannot_be_made_is_no_file() {
        let tmp = tempfile::tempdir().unwrap();
        let blocker = tmp.path().join("file");
        std::fs::write(&blocker, b"").unwrap();
        assert!(LogFile::open(&blocker.join("s.log")).is_none());
        let log = ServerLog::new(None);
        log.set_file(Some(&blocker.join("s.log")));
        log.push("still kept in the ring".into());
        assert_eq!(log.last(1), ["still kept in the ring"]);
    }
}
