//! The one supervisor of child processes.
//!
//! A child is spawned from an argument vector (never a shell) as the leader of its own process
//! group, and on Linux with `PR_SET_PDEATHSIG = SIGKILL`, so it dies with us even when we are
//! killed with SIGKILL. Its stdout and stderr are read as lines split on `\n` and `\r` (progress
//! bars redraw with `\r`), ANSI escapes stripped, kept in a ring (the tail that errors carry),
//! and handed to a listener (a server's [`ServerLog`]). Stopping sends SIGTERM to the group,
//! then SIGKILL after a timeout, and always waits for the exit to be reaped.
//!
//! - `actor`: the lifecycle of a managed server (start, readiness, stop, restarts, watchdog).
//! - `log`: a server's ring, rotating file and the `tracing` layer for the library's lines.
//! - `memory`: what a process tree uses.
//! - `tree`: how a tree is set up and ended per platform (process group and parent-death signal
//!   on Linux, job object on Windows).

pub mod actor;
mod lines;
pub mod log;
pub mod memory;
mod tree;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use crate::events::EventSink;
use crate::sync::lock;
pub use actor::{
    HealthStatus, LaunchError, LaunchSpec, RecoveryPolicy, ServerActor, ServerEvent, ServerState,
    Snapshot, Transition,
};
pub use lines::LineSplitter;
pub use log::{LogRing, ServerLog};

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, ts_rs::TS)]
pub struct ExitInfo {
    #[serde(rename = "exitCode")]
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
    /// The tree's members other than the leader need ending too, when we die or give up on it
    /// (a build: cmake, ninja, compilers). See `tree`.
    pub guarded: bool,
    /// Set in the child's environment, on top of ours.
    pub env: Vec<(String, String)>,
    /// Our variables the child must not see (it would let them override what the library sets).
    pub unset: fn(&str) -> bool,
}

/// The child sees every variable of ours.
pub fn inherit_all(_: &str) -> bool {
    false
}

/// A running (or exited) child.
pub struct Supervised {
    pub pid: u32,
    exit: watch::Receiver<Option<ExitInfo>>,
    pub logs: Arc<LogRing>,
    tree: Arc<tree::Tree>,
}

struct Live {
    pid: u32,
    tree: std::sync::Weak<tree::Tree>,
    exit: watch::Receiver<Option<ExitInfo>>,
}

/// Every child spawned and not yet dropped, for [`end_all`].
static LIVE: Mutex<Vec<Live>> = Mutex::new(Vec::new());

/// Ends every child still running. For the app's exit: Linux (parent-death signal) and Windows
/// (job object) end them anyway, macOS does not. Returns how many trees were ended.
pub fn end_all() -> usize {
    end_where(|_| true)
}

fn end_where(chosen: impl Fn(u32) -> bool) -> usize {
    let mut killed = 0;
    lock(&LIVE).retain(|live| {
        if !chosen(live.pid) {
            return true;
        }
        // An exited child is not signalled: its group id may belong to someone else by now.
        // A guarded tree (a build) is ended by its guard, which outlives us: SIGTERM first, so
        // that ninja can end its jobs.
        if let Some(tree) = live.tree.upgrade()
            && live.exit.borrow().is_none()
        {
            tree.abandon();
            killed += 1;
        }
        false
    });
    killed
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

    /// Asks the whole tree to exit (SIGTERM; CTRL_BREAK on Windows), kills it after `grace`,
    /// and always awaits the exit. A child that had already exited is not signalled: its group id
    /// may belong to someone else by now.
    pub async fn stop(&self, grace: Duration) -> ExitInfo {
        if let Some(info) = self.exited() {
            return info;
        }
        if self.tree.terminate()
            && let Ok(info) = tokio::time::timeout(grace, self.wait()).await
        {
            // Children the leader left behind go with it.
            self.tree.kill();
            return info;
        }
        self.tree.kill();
        let info = self.wait().await;
        self.tree.kill();
        info
    }
}

impl Drop for Supervised {
    /// Whoever drops the last handle of a running child ends its tree: no process outlives the
    /// code that was responsible for it (a cancelled start or build, say).
    fn drop(&mut self) {
        if self.exited().is_none() {
            self.tree.abandon();
        } else {
            self.tree.release();
        }
    }
}

pub fn spawn(spec: ProcessSpec, on_line: Option<EventSink<String>>) -> std::io::Result<Supervised> {
    let mut command = tokio::process::Command::new(&spec.program);
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(spec.unset) {
            command.env_remove(&name);
        }
    }
    command
        .args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let setup = tree::prepare(&mut command);
    let mut child = spawn_retrying(|| command.spawn())?;
    let pid = child.id().unwrap_or(0);
    // On failure the child is dropped, and `kill_on_drop` ends it.
    let tree = Arc::new(tree::Tree::attach(&child, setup, spec.guarded)?);
    let logs = Arc::new(LogRing::default());
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
    .map(|stream| tokio::spawn(read_lines(stream, logs.clone(), on_line.clone())))
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
    {
        let mut live = lock(&LIVE);
        live.retain(|l| l.tree.strong_count() > 0 && l.exit.borrow().is_none());
        live.push(Live {
            pid,
            tree: Arc::downgrade(&tree),
            exit: rx.clone(),
        });
    }
    Ok(Supervised {
        pid,
        exit: rx,
        logs,
        tree,
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
            deliver(line, &logs, &on_line);
        }
    }
    if let Some(line) = splitter.finish() {
        deliver(line, &logs, &on_line);
    }
}

fn deliver(line: String, logs: &LogRing, on_line: &Option<EventSink<String>>) {
    if let Some(sink) = on_line {
        sink.emit(line.clone());
    }
    logs.push(line);
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

#[cfg(all(test, unix))]
mod tests;
