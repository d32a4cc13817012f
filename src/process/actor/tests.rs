//! The actor against real child processes (`sh`, `sleep`) and a health URL served here, whose
//! answer each test sets: ready, loading, or no answer at all.

use super::*;
use crate::process::inherit_all;
use std::sync::atomic::{AtomicU16, Ordering};

/// Answers `GET` with the status it is set to (0: accepts and never answers, as a hung server).
struct Health {
    status: Arc<AtomicU16>,
    url: String,
}

impl Health {
    async fn start(status: u16) -> Health {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/health", listener.local_addr().unwrap());
        let status = Arc::new(AtomicU16::new(status));
        let answer = status.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = socket.read(&mut buf).await;
                    match answer.load(Ordering::SeqCst) {
                        0 => tokio::time::sleep(Duration::from_secs(60)).await,
                        code => {
                            let head = format!(
                                "HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                            );
                            let _ = socket.write_all(head.as_bytes()).await;
                        }
                    }
                });
            }
        });
        Health { status, url }
    }

    fn set(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }
}

fn spec(script: &str, health: &Health) -> LaunchSpec {
    LaunchSpec {
        program: "/bin/sh".into(),
        args: vec!["-c".into(), script.into()],
        env: vec![],
        unset: inherit_all,
        port: 1,
        health_url: health.url.clone(),
        ready_hints: &["ready now"],
        on_line: None,
        startup_timeout: Duration::from_secs(20),
        stop_grace: Duration::from_millis(500),
        recovery: RecoveryPolicy::NONE,
    }
}

type Seen = Arc<Mutex<Vec<ServerEvent<Snapshot>>>>;

fn actor() -> (ServerActor, Seen) {
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    let events = EventSink::new(move |e| sink.lock().unwrap().push(e));
    (
        ServerActor::new("test-server", ServerLog::new(None), Some(events)),
        seen,
    )
}

fn transitions(seen: &Seen) -> Vec<(ServerState, ServerState)> {
    crate::testing::transitions(seen, |e| match e {
        ServerEvent::State(t) => Some(t),
        _ => None,
    })
}

/// A running actor with automatic restarts (at most `max`), whose child was just killed.
async fn crashed(health: &Health, max: u32) -> (ServerActor, Seen, Snapshot) {
    let (actor, seen) = actor();
    let mut spec = spec("exec sleep 30", health);
    spec.recovery = restarting(max);
    let first = actor.start(spec).await.unwrap();
    unsafe { libc::kill(first.pid.unwrap() as i32, libc::SIGKILL) };
    (actor, seen, first)
}

/// Automatic restarts, at most `max`, without the watchdog.
fn restarting(max_restarts: u32) -> RecoveryPolicy {
    RecoveryPolicy {
        auto_restart: true,
        max_restarts,
        health_check_interval_ms: 0,
        hang_after_failures: 0,
    }
}

fn named(seen: &Seen) -> Vec<&'static str> {
    seen.lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            ServerEvent::State(_) => None,
            ServerEvent::Starting => Some("starting"),
            ServerEvent::Started(_) => Some("started"),
            ServerEvent::Stopped => Some("stopped"),
            ServerEvent::Crashed { .. } => Some("crashed"),
            ServerEvent::Restarted(_) => Some("restarted"),
            ServerEvent::RestartFailed { .. } => Some("restart-failed"),
        })
        .collect()
}

/// Every edge the state machine may take (the module's diagram).
const EDGES: &[(ServerState, ServerState)] = {
    use ServerState::*;
    &[
        (Stopped, Starting),
        (Crashed, Starting),
        (Starting, Running),
        (Starting, Stopped),
        (Starting, Stopping),
        (Running, Stopping),
        (Running, Crashed),
        (Stopping, Stopped),
        (Stopping, Restarting),
        (Crashed, Restarting),
        (Crashed, Stopping),
        (Stopped, Restarting),
        (Restarting, Running),
        (Restarting, Crashed),
        (Restarting, Stopping),
        (Restarting, Stopped),
    ]
};

/// One event per transition: each follows on from the last, and each is an edge of the machine.
fn assert_chain(seen: &Seen) {
    let steps = transitions(seen);
    let mut at = ServerState::Stopped;
    for (old, new) in &steps {
        assert_eq!(*old, at, "a transition was skipped or doubled: {steps:?}");
        assert!(
            EDGES.contains(&(*old, *new)),
            "{old} → {new} is not an edge"
        );
        at = *new;
    }
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.split_whitespace().nth(2) != Some("Z"))
}

async fn wait_for(actor: &ServerActor, state: ServerState) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while actor.status() != state {
        assert!(
            Instant::now() < deadline,
            "never {state}: {:?}",
            actor.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_start_and_a_stop_make_four_transitions() {
    use ServerState::*;
    let health = Health::start(200).await;
    let (actor, seen) = actor();
    let snapshot = actor.start(spec("exec sleep 30", &health)).await.unwrap();
    assert_eq!(snapshot.status, Running);
    let pid = snapshot.pid.unwrap();
    assert!(alive(pid));
    let exit = actor.stop().await.unwrap();
    assert_eq!(exit.signal, Some(libc::SIGTERM));
    assert!(!alive(pid));
    assert_eq!(
        transitions(&seen),
        [
            (Stopped, Starting),
            (Starting, Running),
            (Running, Stopping),
            (Stopping, Stopped)
        ]
    );
    assert_eq!(named(&seen), ["starting", "started", "stopped"]);
    assert!(actor.stop().await.is_none(), "stop is idempotent");
    assert_eq!(transitions(&seen).len(), 4);
}

#[tokio::test]
async fn stop_cancels_a_start_that_never_gets_ready_at_once() {
    use ServerState::*;
    let health = Health::start(503).await;
    let (actor, seen) = actor();
    let actor = Arc::new(actor);
    // A tree: the leader and a child of its own, both killed.
    let starting = tokio::spawn({
        let actor = actor.clone();
        let spec = spec("sleep 30 & exec sleep 30", &health);
        async move { actor.start(spec).await }
    });
    wait_for(&actor, Starting).await;
    let leader = loop {
        if let Some(pid) = actor.snapshot().pid {
            break pid;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let tree = super::super::memory::tree(leader).unwrap().pids;
    let began = Instant::now();
    assert!(actor.stop().await.is_some());
    assert!(
        began.elapsed() < Duration::from_secs(1),
        "{:?}",
        began.elapsed()
    );
    let err = starting.await.unwrap().unwrap_err();
    assert!(matches!(err, LaunchError::Cancelled { .. }), "{err}");
    assert_eq!(err.code(), ErrorCode::Cancelled);
    // Signals are delivered a moment after killpg returns.
    let deadline = Instant::now() + Duration::from_millis(500);
    while tree.iter().any(|&pid| alive(pid)) {
        assert!(
            Instant::now() < deadline,
            "{tree:?} outlived the cancelled start"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        transitions(&seen),
        [
            (Stopped, Starting),
            (Starting, Stopping),
            (Stopping, Stopped)
        ]
    );
    assert_eq!(actor.status(), Stopped);
}

#[tokio::test]
async fn a_start_while_stopping_waits_for_the_stop_then_starts() {
    let health = Health::start(200).await;
    let (actor, seen) = actor();
    // Ignores SIGTERM: the stop takes its whole grace.
    let stubborn = "trap '' TERM; while true; do sleep 0.05; done";
    actor.start(spec(stubborn, &health)).await.unwrap();
    // Ready at once (the health URL is not the child's): let the shell set its trap.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (stopped, started) = tokio::join!(actor.stop(), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(actor.status(), ServerState::Stopping);
        actor.start(spec("exec sleep 30", &health)).await
    });
    assert_eq!(stopped.unwrap().signal, Some(libc::SIGKILL));
    assert_eq!(started.unwrap().status, ServerState::Running);
    assert_chain(&seen);
    actor.stop().await;
}

#[tokio::test]
async fn starts_are_refused_while_starting_or_running() {
    let health = Health::start(503).await;
    let (actor, _) = actor();
    let actor = Arc::new(actor);
    let first = tokio::spawn({
        let (actor, spec) = (actor.clone(), spec("exec sleep 30", &health));
        async move { actor.start(spec).await }
    });
    wait_for(&actor, ServerState::Starting).await;
    let err = actor
        .start(spec("exec sleep 30", &health))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            LaunchError::AlreadyRunning {
                state: ServerState::Starting,
                ..
            }
        ),
        "{err}"
    );
    health.set(200);
    first.await.unwrap().unwrap();
    let err = actor
        .start(spec("exec sleep 30", &health))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "test-server is already running");
    actor.stop().await;
}

#[tokio::test]
async fn an_exit_during_start_fails_fast_with_the_output() {
    use ServerState::*;
    let health = Health::start(503).await;
    let (actor, seen) = actor();
    let began = Instant::now();
    let err = actor
        .start(spec(
            "echo 'error: failed to load model' >&2; exit 1",
            &health,
        ))
        .await
        .unwrap_err();
    assert!(began.elapsed() < Duration::from_secs(2));
    let LaunchError::ExitedDuringStart { exit, tail, .. } = &err else {
        panic!("{err}");
    };
    assert_eq!(exit.code, Some(1));
    assert_eq!(tail, &["error: failed to load model"]);
    assert_eq!(
        transitions(&seen),
        [(Stopped, Starting), (Starting, Stopped)]
    );
    assert_eq!(named(&seen), ["starting", "stopped"]);
    let snapshot = actor.snapshot();
    assert!(snapshot.error.unwrap().contains("exited during start"));
    assert!(snapshot.pid.is_none());
}

#[tokio::test]
async fn a_start_that_never_gets_ready_times_out_and_leaves_nothing() {
    let health = Health::start(503).await;
    let (actor, _) = actor();
    let mut spec = spec("echo loading; exec sleep 30", &health);
    spec.startup_timeout = Duration::from_millis(300);
    let err = actor.start(spec).await.unwrap_err();
    assert!(matches!(err, LaunchError::Timeout { .. }), "{err}");
    assert_eq!(err.tail(), ["loading"]);
    let pid = lock(&actor.child).as_ref().unwrap().pid;
    assert!(!alive(pid));
    assert_eq!(actor.status(), ServerState::Stopped);
}

#[tokio::test]
async fn a_crash_restarts_with_backoff_and_every_transition_is_announced_once() {
    use ServerState::*;
    let health = Health::start(200).await;
    let (actor, seen, first) = crashed(&health, 2).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while actor.snapshot().restarts == 0 {
        assert!(Instant::now() < deadline, "{:?}", actor.snapshot());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let again = actor.snapshot();
    assert_ne!(again.pid, first.pid);
    assert_eq!(again.restarts, 1);
    actor.stop().await;
    assert_eq!(transitions(&seen), crate::testing::CRASH_RESTART_STOP);
    assert_chain(&seen);
    assert_eq!(
        named(&seen),
        ["starting", "started", "crashed", "restarted", "stopped"]
    );
    let crash_will_restart = seen
        .lock()
        .unwrap()
        .iter()
        .any(|e| matches!(e, ServerEvent::State(t) if t.new == Crashed && t.will_restart));
    assert!(crash_will_restart);
}

#[tokio::test]
async fn restarts_that_keep_failing_end_crashed_with_restart_failed_and_no_stop() {
    use ServerState::*;
    let health = Health::start(200).await;
    let (actor, seen) = actor();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("broken");
    // Runs until the marker exists; from then on every start fails at once.
    let script = format!(
        "[ -e {0} ] && {{ echo 'model is damaged' >&2; exit 2; }}; exec sleep 30",
        marker.display()
    );
    let mut spec = spec(&script, &health);
    spec.recovery = restarting(2);
    let first = actor.start(spec).await.unwrap();
    std::fs::write(&marker, b"").unwrap();
    // Nothing answers for the damaged server (the port of a real one dies with it).
    health.set(503);
    unsafe { libc::kill(first.pid.unwrap() as i32, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !named(&seen).contains(&"restart-failed") {
        assert!(Instant::now() < deadline, "{:?}", named(&seen));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        transitions(&seen),
        [
            (Stopped, Starting),
            (Starting, Running),
            (Running, Crashed),
            (Crashed, Restarting),
            (Restarting, Crashed),
            (Crashed, Restarting),
            (Restarting, Crashed)
        ]
    );
    assert_eq!(
        named(&seen),
        ["starting", "started", "crashed", "restart-failed"]
    );
    let will_restart: Vec<bool> = seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            ServerEvent::State(t) if t.new == Crashed => Some(t.will_restart),
            _ => None,
        })
        .collect();
    assert_eq!(will_restart, [true, true, false]);
    let failed = seen.lock().unwrap().iter().find_map(|e| match e {
        ServerEvent::RestartFailed { attempts, error } => Some((*attempts, error.clone())),
        _ => None,
    });
    let (attempts, error) = failed.unwrap();
    assert_eq!(attempts, 2);
    assert!(error.contains("model is damaged"), "{error}");
    assert_eq!(actor.status(), Crashed);
    assert_eq!(
        actor.stop().await.unwrap().signal,
        Some(libc::SIGKILL),
        "stop() of a crashed server tells how it ended"
    );
    assert_eq!(actor.status(), Stopped);
    assert_chain(&seen);
}

#[tokio::test]
async fn stop_during_the_restart_backoff_ends_in_stopped() {
    use ServerState::*;
    let health = Health::start(200).await;
    let (actor, seen, _) = crashed(&health, 3).await;
    wait_for(&actor, Restarting).await;
    let began = Instant::now();
    assert!(actor.stop().await.is_some());
    assert!(
        began.elapsed() < Duration::from_millis(400),
        "the 500 ms backoff is cut short"
    );
    assert_eq!(actor.status(), Stopped);
    assert_chain(&seen);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(actor.status(), Stopped, "no restart after the stop");
}

#[tokio::test]
async fn the_watchdog_kills_a_hung_server_and_restarts_it() {
    use ServerState::*;
    let health = Health::start(200).await;
    let (actor, seen) = actor();
    let mut spec = spec("exec sleep 30", &health);
    spec.recovery = RecoveryPolicy {
        auto_restart: true,
        max_restarts: 1,
        health_check_interval_ms: 100,
        hang_after_failures: 2,
    };
    let first = actor.start(spec).await.unwrap();
    assert_eq!(actor.health(Running), HealthStatus::Ok);
    health.set(0);
    // One failed check: alive but unhealthy, before the second makes it a hang.
    let deadline = Instant::now() + Duration::from_secs(2);
    while actor.health(actor.status()) != HealthStatus::Error && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(actor.health(actor.status()), HealthStatus::Error);
    wait_for(&actor, Restarting).await;
    assert!(!alive(first.pid.unwrap()), "the hung process was killed");
    let hang = seen
        .lock()
        .unwrap()
        .iter()
        .any(|e| matches!(e, ServerEvent::Crashed { hang: true, .. }));
    assert!(hang);
    health.set(200);
    wait_for(&actor, Running).await;
    assert_eq!(
        actor.health(Running),
        HealthStatus::Ok,
        "a new run starts healthy"
    );
    assert_ne!(actor.snapshot().pid, first.pid);
    actor.stop().await;
    assert_chain(&seen);
}

#[tokio::test]
async fn restart_runs_the_last_spec_again_through_restarting() {
    use ServerState::*;
    let health = Health::start(200).await;
    let (actor, seen) = actor();
    let err = actor.restart().await.unwrap_err();
    assert!(matches!(err, LaunchError::NeverStarted { .. }), "{err}");
    let first = actor.start(spec("exec sleep 30", &health)).await.unwrap();
    let again = actor.restart().await.unwrap();
    assert_eq!(again.status, Running);
    assert_eq!(again.port, first.port);
    assert_ne!(again.pid, first.pid);
    assert!(!alive(first.pid.unwrap()));
    assert_eq!(again.restarts, 0, "only automatic restarts are counted");
    actor.stop().await;
    // From Stopped too.
    assert_eq!(actor.restart().await.unwrap().status, Running);
    actor.stop().await;
    assert_eq!(
        transitions(&seen)[2..6],
        [
            (Running, Stopping),
            (Stopping, Restarting),
            (Restarting, Running),
            (Running, Stopping)
        ]
    );
    assert_chain(&seen);
    assert_eq!(
        named(&seen),
        [
            "starting",
            "started",
            "restarted",
            "stopped",
            "restarted",
            "stopped"
        ]
    );
}

#[tokio::test]
async fn output_lines_reach_the_servers_log_and_the_hook_and_library_lines_follow() {
    let health = Health::start(200).await;
    let (actor, _) = actor();
    let heard = Arc::new(Mutex::new(Vec::new()));
    let mut spec = spec("echo 'hello from the child'; exec sleep 30", &health);
    spec.on_line = Some(EventSink::new({
        let heard = heard.clone();
        move |l| heard.lock().unwrap().push(l)
    }));
    actor.start(spec).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while heard.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    actor.stop().await;
    assert_eq!(*heard.lock().unwrap(), ["hello from the child"]);
    assert_eq!(actor.tail(5), ["hello from the child"]);
    let logs = actor.log().last(20).join("\n");
    assert!(
        logs.contains("] [INFO] starting test-server on port 1"),
        "{logs}"
    );
    assert!(logs.contains("hello from the child"), "{logs}");
    assert!(logs.contains("] [INFO] stopping test-server"), "{logs}");
}

#[tokio::test]
async fn the_memory_of_the_running_tree_is_read() {
    let health = Health::start(200).await;
    let (actor, _) = actor();
    assert!(actor.memory().await.is_none());
    actor
        .start(spec("sleep 30 & exec sleep 30", &health))
        .await
        .unwrap();
    let mut memory = actor.memory().await.unwrap();
    for _ in 0..50 {
        if memory.pids.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        memory = actor.memory().await.unwrap();
    }
    assert_eq!(memory.pids.len(), 2, "{memory:?}");
    assert_eq!(Some(memory.pids[0]), actor.snapshot().pid);
    assert!(memory.rss_bytes > 0);
    actor.stop().await;
    assert!(actor.memory().await.is_none());
}

#[tokio::test]
async fn dropping_the_handle_ends_the_child() {
    let health = Health::start(200).await;
    let (actor, _) = actor();
    let pid = actor
        .start(spec("exec sleep 30", &health))
        .await
        .unwrap()
        .pid
        .unwrap();
    drop(actor);
    let deadline = Instant::now() + Duration::from_secs(2);
    while alive(pid) {
        assert!(Instant::now() < deadline, "{pid} outlived its actor");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
