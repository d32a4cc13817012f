//! System RAM, read fresh from the kernel's counters on each call.

use serde::Serialize;
use sysinfo::{MemoryRefreshKind, RefreshKind, System};
use ts_rs::TS;

/// System RAM in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, TS)]
pub struct MemoryInfo {
    pub total: u64,
    /// What the OS can hand out without swapping (Linux `MemAvailable`).
    pub available: u64,
    pub used: u64,
}

pub fn detect_memory() -> MemoryInfo {
    let (total, available) = match System::new_with_specifics(
        RefreshKind::nothing().with_memory(MemoryRefreshKind::nothing().with_ram()),
    ) {
        Ok(sys) => (
            sys.total_memory(),
            sys.available_memory().min(sys.total_memory()),
        ),
        Err(err) => {
            // Only happens where the OS hides its counters (e.g. /proc not mounted).
            tracing::warn!("memory counters unreadable: {err}");
            (0, 0)
        }
    };
    MemoryInfo {
        total,
        available,
        used: total - available,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    fn meminfo_kib(key: &str) -> u64 {
        let text = std::fs::read_to_string("/proc/meminfo").unwrap();
        let line = text.lines().find(|l| l.starts_with(key)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn matches_proc_meminfo_within_two_percent() {
        let mem = detect_memory();
        let total = meminfo_kib("MemTotal:") * 1024;
        let available = meminfo_kib("MemAvailable:") * 1024;
        assert_eq!(mem.total, total);
        let diff = mem.available.abs_diff(available) as f64;
        assert!(
            diff / total as f64 <= 0.02,
            "{} vs {}",
            mem.available,
            available
        );
        assert_eq!(mem.used, mem.total - mem.available);
    }
}
