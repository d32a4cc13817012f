//! A child's process tree, per platform: how it is set up at spawn, and how it is ended.
//!
//! - **Unix**: the child leads its own process group, so a signal to the group reaches whatever it
//!   started too. On Linux it also gets `PR_SET_PDEATHSIG = SIGKILL`: it dies with us even when we
//!   are killed with SIGKILL. Terminate is SIGTERM to the group, kill is SIGKILL to the group.
//!   macOS has no parent-death signal: there the tree ends on `stop`, or with the leader when the
//!   `Supervised` is dropped (`kill_on_drop`), but not when we are killed outright.
//!   A *guarded* tree (a build: cmake starts ninja, which starts compilers, and none of those
//!   get the parent-death signal) also has a guard: a small `sh` outside the group that waits on
//!   a pipe from us. If we die, or drop the tree while it runs, the pipe closes and the guard
//!   sends SIGTERM to the group (ninja passes it on to the process groups of its jobs), then
//!   SIGKILL two seconds later. When the tree ends normally we tell it `done` and it just exits.
//!   Its script is a constant and the group id its only argument: nothing of ours reaches a shell.
//! - **Windows**: the child goes into a job object with `JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE`. We
//!   hold the only handle, so the tree ends when we close it, and when we die, however we die.
//!   Terminate is CTRL_BREAK to the child's process group when it shares our console (Node in a
//!   terminal); an app without a console (Electron) starts it without a window, where no console
//!   event can reach it, so there terminate ends the job at once. Kill ends the job.
//!   Not compiled into a binary or run here: the Linux path is the tested one.

#[cfg(unix)]
pub use unix::{Tree, prepare};
#[cfg(windows)]
pub use windows::{Tree, prepare};

#[cfg(unix)]
mod unix {
    use std::io::Write;
    use std::process::{Child, ChildStdin, Command, Stdio};
    use std::sync::Mutex;

    use crate::sync::lock;

    pub struct Setup;

    /// The guard's script: `$1` is the group id.
    const GUARD: &str = "trap '' INT TERM HUP; read -r word; [ \"$word\" = done ] && exit 0; \
        kill -s TERM -- \"-$1\" 2>/dev/null; sleep 2; kill -s KILL -- \"-$1\" 2>/dev/null";

    struct Guard {
        pipe: ChildStdin,
        process: Child,
    }

    impl Guard {
        fn start(group: u32) -> std::io::Result<Guard> {
            let mut process = Command::new("/bin/sh")
                .args(["-c", GUARD, "guard", &group.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            let pipe = process.stdin.take().expect("piped");
            Ok(Guard { pipe, process })
        }

        /// `done`: exit quietly; otherwise (EOF) end the group.
        fn finish(mut self, done: bool) {
            if done {
                let _ = self.pipe.write_all(b"done\n");
            }
            drop(self.pipe);
            // Reaped off the caller's thread: the guard may take two seconds.
            let mut process = self.process;
            std::thread::spawn(move || process.wait());
        }
    }

    pub fn prepare(command: &mut tokio::process::Command) -> Setup {
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
        Setup
    }

    pub struct Tree {
        /// The group id: the leader's pid.
        group: u32,
        guard: Mutex<Option<Guard>>,
    }

    impl Tree {
        pub fn attach(
            child: &tokio::process::Child,
            _setup: Setup,
            guarded: bool,
        ) -> std::io::Result<Tree> {
            let group = child.id().unwrap_or(0);
            let guard = if guarded {
                Some(Guard::start(group)?)
            } else {
                None
            };
            Ok(Tree {
                group,
                guard: Mutex::new(guard),
            })
        }

        /// The leader was reaped: a guard stands down.
        pub fn release(&self) {
            if let Some(guard) = lock(&self.guard).take() {
                guard.finish(true);
            }
        }

        /// Ends a tree nobody will wait for: through its guard (SIGTERM, then SIGKILL) when it
        /// has one, so that ninja can end its jobs; otherwise SIGKILL now.
        pub fn abandon(&self) {
            match lock(&self.guard).take() {
                Some(guard) => guard.finish(false),
                None => self.kill(),
            }
        }

        /// SIGTERM to the group. True: the tree was asked, and may take a moment to exit.
        pub fn terminate(&self) -> bool {
            self.signal(libc::SIGTERM);
            true
        }

        pub fn kill(&self) {
            self.signal(libc::SIGKILL);
        }

        fn signal(&self, signal: libc::c_int) {
            if self.group > 0 {
                // SAFETY: plain syscall on a group we created.
                unsafe {
                    libc::killpg(self.group as libc::pid_t, signal);
                }
            }
        }
    }
}

#[cfg(windows)]
mod windows {
    use std::io;
    use std::ptr;

    use windows_sys::Win32::Foundation::{CloseHandle, HANDLE};
    use windows_sys::Win32::System::Console::{
        CTRL_BREAK_EVENT, GenerateConsoleCtrlEvent, GetConsoleWindow,
    };
    use windows_sys::Win32::System::JobObjects::{
        AssignProcessToJobObject, CreateJobObjectW, JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
        JOBOBJECT_EXTENDED_LIMIT_INFORMATION, JobObjectExtendedLimitInformation,
        SetInformationJobObject, TerminateJobObject,
    };
    use windows_sys::Win32::System::Threading::{CREATE_NEW_PROCESS_GROUP, CREATE_NO_WINDOW};

    pub struct Setup {
        shares_console: bool,
    }

    pub fn prepare(command: &mut tokio::process::Command) -> Setup {
        // SAFETY: no arguments; returns null when this process has no console.
        let shares_console = !unsafe { GetConsoleWindow() }.is_null();
        let window = if shares_console { 0 } else { CREATE_NO_WINDOW };
        command.creation_flags(CREATE_NEW_PROCESS_GROUP | window);
        Setup { shares_console }
    }

    pub struct Tree {
        pid: u32,
        job: HANDLE,
        shares_console: bool,
    }

    // SAFETY: a job handle may be used and closed from any thread.
    unsafe impl Send for Tree {}
    unsafe impl Sync for Tree {}

    impl Tree {
        /// `_guarded` needs nothing more here: the job holds every descendant.
        pub fn attach(
            child: &tokio::process::Child,
            setup: Setup,
            _guarded: bool,
        ) -> io::Result<Tree> {
            let process = child
                .raw_handle()
                .ok_or_else(|| io::Error::other("the child has already exited"))?;
            // SAFETY: plain Win32 calls on a job we create and the child's live handle; the job
            // handle is closed on failure here, or by Drop.
            unsafe {
                let job = CreateJobObjectW(ptr::null(), ptr::null());
                if job.is_null() {
                    return Err(io::Error::last_os_error());
                }
                let mut limits = JOBOBJECT_EXTENDED_LIMIT_INFORMATION::default();
                limits.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
                let limited = SetInformationJobObject(
                    job,
                    JobObjectExtendedLimitInformation,
                    &limits as *const _ as *const core::ffi::c_void,
                    size_of::<JOBOBJECT_EXTENDED_LIMIT_INFORMATION>() as u32,
                );
                if limited == 0 || AssignProcessToJobObject(job, process as HANDLE) == 0 {
                    let err = io::Error::last_os_error();
                    CloseHandle(job);
                    return Err(err);
                }
                Ok(Tree {
                    pid: child.id().unwrap_or(0),
                    job,
                    shares_console: setup.shares_console,
                })
            }
        }

        /// CTRL_BREAK when the child shares our console (true: it may take a moment to exit);
        /// otherwise no console event can reach it, and the job is ended now (false).
        pub fn terminate(&self) -> bool {
            // SAFETY: plain Win32 call; the group id is the child's pid (CREATE_NEW_PROCESS_GROUP).
            if self.shares_console
                && unsafe { GenerateConsoleCtrlEvent(CTRL_BREAK_EVENT, self.pid) } != 0
            {
                return true;
            }
            self.kill();
            false
        }

        pub fn release(&self) {}

        pub fn abandon(&self) {
            self.kill();
        }

        pub fn kill(&self) {
            // SAFETY: the job handle is open until Drop.
            unsafe {
                TerminateJobObject(self.job, 1);
            }
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            // Closing the last handle ends whatever is still in the job (KILL_ON_JOB_CLOSE).
            // SAFETY: closed once, here.
            unsafe {
                CloseHandle(self.job);
            }
        }
    }
}
