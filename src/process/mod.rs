//! The one supervisor of child processes.
//!
//! A child is spawned from an argument vector (never a shell) as the leader of its own process
//! group, and on Linux with `PR_SET_PDEATHSIG = SIGKILL`, so it dies with us even when we are
//! killed with SIGKILL. Its stdout and stderr are read as lines split on `\n` and `\r` (progress
//! bars redraw with `\r`), ANSI escapes stripped, kept in a ring for `logs(n)`, appended to a
//! size-bounded rotating log file, and handed to a listener. Stopping sends SIGTERM to the group,
//! then SIGKILL after a timeout, and always waits for the exit to be reaped.
//!
//! Windows (job object with kill-on-close) and macOS (no parent-death signal: the group is killed
//! on stop and by `kill_on_drop`) are not built or tested here.

mod lines;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use crate::events::EventSink;
use crate::sync::lock;
pub use lines::LineSplitter;

const RING_LINES: usize = 2000;
const LOG_FILE_LIMIT: u64 = 5 << 20;
const LOG_ARCHIVES: usize = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitInfo {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl std::fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exit code {code}"),
            (None, Some(signal)) => write!(f, "signal {signal}"),
            (None, None) => write!(f, "unknown exit"),
        }
    }
}

pub struct ProcessSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Rotating log file of the child's output (`<file>.1` … `.3` keep older output).
    pub log_file: Option<PathBuf>,
}

/// Lines of output, newest last, shared by the readers and `logs(n)`.
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

/// A running (or exited) child.
pub struct Supervised {
    pub pid: u32,
    exit: watch::Receiver<Option<ExitInfo>>,
    pub logs: Arc<LogRing>,
}

impl Supervised {
    pub fn exited(&self) -> Option<ExitInfo> {
        self.exit.borrow().clone()
    }

    /// Resolves when the child has exited and been reaped.
    pub async fn wait(&self) -> ExitInfo {
        let mut exit = self.exit.clone();
        loop {
            if let Some(info) = exit.borrow_and_update().clone() {
                return info;
            }
            if exit.changed().await.is_err() {
                return ExitInfo {
                    code: None,
                    signal: None,
                };
            }
        }
    }

    /// SIGTERM to the whole group, SIGKILL after `grace`, and the exit always awaited.
    pub async fn stop(&self, grace: Duration) -> ExitInfo {
        if self.exited().is_none() {
            signal_group(self.pid, Signal::Term);
            if let Ok(info) = tokio::time::timeout(grace, self.wait()).await {
                // Children the leader left behind go with it.
                signal_group(self.pid, Signal::Kill);
                return info;
            }
            signal_group(self.pid, Signal::Kill);
        }
        let info = self.wait().await;
        signal_group(self.pid, Signal::Kill);
        info
    }
}

pub fn spawn(spec: ProcessSpec, on_line: Option<EventSink<String>>) -> std::io::Result<Supervised> {
    let mut command = tokio::process::Command::new(&spec.program);
    command
        .args(&spec.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    own_group_and_die_with_parent(&mut command);
    let mut child = spawn_retrying(|| command.spawn())?;
    let pid = child.id().unwrap_or(0);
    let logs = Arc::new(LogRing::default());
    let log_file = spec
        .log_file
        .map(|path| Arc::new(Mutex::new(RotatingLog::new(path))));
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|stream| {
        tokio::spawn(read_lines(
            stream,
            logs.clone(),
            log_file.clone(),
            on_line.clone(),
        ))
    })
    .collect();
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let status = child.wait().await;
        // Let the readers drain what the child wrote before it exited.
        for reader in readers {
            let _ = tokio::time::timeout(Duration::from_millis(500), reader).await;
        }
        let info = match status {
            Ok(status) => exit_info(status),
            Err(_) => ExitInfo {
                code: None,
                signal: None,
            },
        };
        let _ = tx.send(Some(info));
    });
    Ok(Supervised {
        pid,
        exit: rx,
        logs,
    })
}

/// Runs `spawn`, retrying briefly while the executable is "busy" (ETXTBSY): a file just written
/// (an extracted release, a built binary) can still be open for writing in a child another thread
/// forked at that moment, until that child reaches exec.
pub fn spawn_retrying<T>(mut spawn: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    let mut tries = 0;
    loop {
        match spawn() {
            Err(e) if is_text_busy(&e) && tries < 20 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

#[cfg(unix)]
fn is_text_busy(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::ETXTBSY)
}

#[cfg(not(unix))]
fn is_text_busy(_e: &std::io::Error) -> bool {
    false
}

async fn read_lines(
    mut stream: Box<dyn tokio::io::AsyncRead + Unpin + Send>,
    logs: Arc<LogRing>,
    file: Option<Arc<Mutex<RotatingLog>>>,
    on_line: Option<EventSink<String>>,
) {
    let mut splitter = LineSplitter::default();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for line in splitter.feed(&buf[..n]) {
            deliver(line, &logs, &file, &on_line);
        }
    }
    if let Some(line) = splitter.finish() {
        deliver(line, &logs, &file, &on_line);
    }
}

fn deliver(
    line: String,
    logs: &LogRing,
    file: &Option<Arc<Mutex<RotatingLog>>>,
    on_line: &Option<EventSink<String>>,
) {
    if let Some(file) = file {
        lock(file).append(&line);
    }
    if let Some(sink) = on_line {
        sink.emit(line.clone());
    }
    logs.push(line);
}

/// Appends lines to a file; past the size limit the file becomes `.1` (older ones shift up to
/// `.3`, the oldest is dropped). Write failures are ignored: logging never takes a server down.
struct RotatingLog {
    path: PathBuf,
    size: u64,
}

impl RotatingLog {
    fn new(path: PathBuf) -> Self {
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        RotatingLog { path, size }
    }

    fn append(&mut self, line: &str) {
        use std::io::Write;
        if self.size + line.len() as u64 + 1 > LOG_FILE_LIMIT {
            self.rotate();
        }
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            && writeln!(file, "{line}").is_ok()
        {
            self.size += line.len() as u64 + 1;
        }
    }

    fn rotate(&mut self) {
        let archive = |i: usize| {
            let mut name = self.path.as_os_str().to_owned();
            name.push(format!(".{i}"));
            PathBuf::from(name)
        };
        for i in (1..LOG_ARCHIVES).rev() {
            let _ = std::fs::rename(archive(i), archive(i + 1));
        }
        let _ = std::fs::rename(&self.path, archive(1));
        self.size = 0;
    }
}

#[derive(Clone, Copy)]
enum Signal {
    Term,
    Kill,
}

#[cfg(unix)]
fn signal_group(pid: u32, signal: Signal) {
    let sig = match signal {
        Signal::Term => libc::SIGTERM,
        Signal::Kill => libc::SIGKILL,
    };
    if pid > 0 {
        // SAFETY: plain syscall; the group id is the child's pid (it leads its own group).
        unsafe {
            libc::killpg(pid as libc::pid_t, sig);
        }
    }
}

#[cfg(not(unix))]
fn signal_group(_pid: u32, _signal: Signal) {
    // Windows: the job object (kill-on-close) ends the tree; kill_on_drop ends the leader.
}

#[cfg(unix)]
fn exit_info(status: std::process::ExitStatus) -> ExitInfo {
    use std::os::unix::process::ExitStatusExt;
    ExitInfo {
        code: status.code(),
        signal: status.signal(),
    }
}

#[cfg(not(unix))]
fn exit_info(status: std::process::ExitStatus) -> ExitInfo {
    ExitInfo {
        code: status.code(),
        signal: None,
    }
}

#[cfg(unix)]
fn own_group_and_die_with_parent(command: &mut tokio::process::Command) {
    #[cfg(target_os = "linux")]
    // SAFETY: getpid is async-signal-safe.
    let parent = unsafe { libc::getpid() };
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            #[cfg(target_os = "linux")]
            {
                // The signal fires when the spawning *thread* ends: we spawn from tokio's
                // long-lived worker threads, never from the short-lived blocking pool.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died between fork and prctl.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
            }
            Ok(())
        });
    }
}

#[cfg(not(unix))]
fn own_group_and_die_with_parent(_command: &mut tokio::process::Command) {}

#[cfg(all(test, unix))]
mod tests;
