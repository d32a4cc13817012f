//! What a running server uses: the resident memory of its whole process tree, and, where NVML
//! answers, the VRAM its processes hold. The orchestrator compares these with its estimates.

use serde::Serialize;
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

/// What a running server's process tree uses now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ts_rs::TS)]
#[serde(rename_all = "camelCase")]
#[ts(rename = "MemoryUsage")]
pub struct TreeMemory {
    /// The tree's processes, the leader first.
    pub pids: Vec<u32>,
    /// Resident memory of the whole tree, bytes.
    pub rss_bytes: u64,
    /// VRAM its processes hold on NVIDIA GPUs (NVML); for llama-server, at least the buffers
    /// llama.cpp reported on its devices as it loaded; `null` where that cannot be told.
    pub vram_bytes: Option<u64>,
}

/// Reads the tree under `leader` (the leader and every descendant); `None` when the leader is
/// gone. Scans the process table: call it from the blocking pool.
pub fn tree(leader: u32) -> Option<TreeMemory> {
    let mut system = System::new().ok()?;
    system.refresh_processes_specifics(
        ProcessesToUpdate::All,
        true,
        ProcessRefreshKind::nothing().with_memory().without_tasks(),
    );
    let processes = system.processes();
    let root = processes.get(&Pid::from_u32(leader))?;
    let mut pids = vec![leader];
    let mut rss_bytes = root.memory();
    // Breadth-first over the parent links: children appear after their parent in `pids`.
    let mut i = 0;
    while i < pids.len() {
        let parent = Pid::from_u32(pids[i]);
        for (pid, process) in processes {
            // Threads are listed too (Linux), with their process as parent and its memory.
            let child_process = process.parent() == Some(parent) && process.thread_kind().is_none();
            if child_process && !pids.contains(&pid.as_u32()) {
                pids.push(pid.as_u32());
                rss_bytes += process.memory();
            }
        }
        i += 1;
    }
    let vram_bytes = crate::system::gpu::vram_of_processes(&pids);
    Some(TreeMemory {
        pids,
        rss_bytes,
        vram_bytes,
    })
}

/// The highest resident memory `pid` has had (Linux `VmHWM`); `None` elsewhere, where callers
/// sample [`tree`] instead.
pub fn peak_rss(pid: u32) -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        None
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_tree_counts_its_children() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & sleep 30 & wait"])
            .spawn()
            .unwrap();
        let leader = child.id();
        let mut found = None;
        for _ in 0..100 {
            found = tree(leader).filter(|t| t.pids.len() == 3);
            if found.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let found = found.expect("the shell and its two sleeps");
        assert_eq!(found.pids[0], leader);
        let own = |pid: u32| {
            let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap();
            statm
                .split_whitespace()
                .nth(1)
                .unwrap()
                .parse::<u64>()
                .unwrap()
                * 4096
        };
        let expected: u64 = found.pids.iter().map(|&p| own(p)).sum();
        // The same pages, read a moment apart.
        assert!(
            found.rss_bytes.abs_diff(expected) < expected / 4,
            "{found:?} vs {expected}"
        );
        for &pid in &found.pids {
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        let _ = child.wait();
        assert!(tree(leader).is_none());
    }

    #[test]
    fn the_peak_is_at_least_what_is_resident_now() {
        let me = std::process::id();
        let now = tree(me).unwrap().rss_bytes;
        let peak = peak_rss(me).unwrap();
        assert!(peak >= now / 2 && peak > 0, "{peak} vs {now}");
        assert_eq!(peak_rss(u32::MAX), None);
    }
}
