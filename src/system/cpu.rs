//! CPU model, core counts and the SIMD features llama.cpp's CPU backends care about.

use serde::Serialize;
use sysinfo::{CpuRefreshKind, RefreshKind, System};
use ts_rs::TS;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(rename = "CPUInfo")]
pub struct CpuInfo {
    /// Marketing name, e.g. `"AMD Ryzen 7 7840U"`.
    pub model: String,
    /// Logical processors (the seed's `cores`); same as `logicalCores`.
    pub cores: u32,
    pub physical_cores: u32,
    pub logical_cores: u32,
    /// Node's naming, as `process.arch`: `x64`, `arm64`, …
    pub architecture: String,
    /// SIMD features of this CPU, lower case: `avx2`, `avx512f`, `neon`, …
    pub features: Vec<String>,
}

pub fn detect_cpu() -> CpuInfo {
    let cpus =
        System::new_with_specifics(RefreshKind::nothing().with_cpu(CpuRefreshKind::nothing()))
            .map(|sys| {
                sys.cpus()
                    .iter()
                    .map(|c| c.brand().to_string())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
    let logical = if cpus.is_empty() {
        std::thread::available_parallelism().map_or(1, |n| n.get()) as u32
    } else {
        cpus.len() as u32
    };
    let model = cpus
        .first()
        .map(|brand| brand.trim().to_string())
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| "Unknown CPU".to_string());
    let physical = System::physical_core_count()
        .ok()
        .map(|n| n as u32)
        .filter(|&n| n > 0)
        .unwrap_or(logical);
    CpuInfo {
        model,
        cores: logical,
        physical_cores: physical.min(logical),
        logical_cores: logical,
        architecture: node_arch(std::env::consts::ARCH).to_string(),
        features: simd_features(),
    }
}

pub fn node_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "x64",
        "aarch64" => "arm64",
        "x86" => "ia32",
        "arm" => "arm",
        "powerpc64" => "ppc64",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

#[cfg(target_arch = "x86_64")]
fn simd_features() -> Vec<String> {
    let mut found = Vec::new();
    macro_rules! probe {
        ($($name:tt),*) => {$(
            if std::arch::is_x86_feature_detected!($name) { found.push($name.to_string()); }
        )*};
    }
    probe!(
        "sse3",
        "ssse3",
        "sse4.1",
        "sse4.2",
        "avx",
        "f16c",
        "fma",
        "avx2",
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512vnni",
        "avx512bf16"
    );
    found
}

#[cfg(target_arch = "aarch64")]
fn simd_features() -> Vec<String> {
    let mut found = Vec::new();
    macro_rules! probe {
        ($($name:tt),*) => {$(
            if std::arch::is_aarch64_feature_detected!($name) { found.push($name.to_string()); }
        )*};
    }
    probe!("neon", "dotprod", "fp16", "i8mm", "sve", "sve2");
    found
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn simd_features() -> Vec<String> {
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_names_follow_node() {
        assert_eq!(node_arch("x86_64"), "x64");
        assert_eq!(node_arch("aarch64"), "arm64");
        assert_eq!(node_arch("mips"), "mips");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn matches_proc_cpuinfo() {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
        let cpu = detect_cpu();
        let processors = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count() as u32;
        assert_eq!(cpu.logical_cores, processors);
        assert!(cpu.physical_cores >= 1 && cpu.physical_cores <= cpu.logical_cores);
        if let Some(line) = cpuinfo.lines().find(|l| l.starts_with("model name")) {
            let name = line.split_once(':').unwrap().1.trim();
            assert_eq!(cpu.model, name);
        }
        #[cfg(target_arch = "x86_64")]
        {
            let flags = cpuinfo.lines().find(|l| l.starts_with("flags")).unwrap();
            let flags: Vec<&str> = flags
                .split_once(':')
                .unwrap()
                .1
                .split_whitespace()
                .collect();
            assert_eq!(
                cpu.features.contains(&"avx2".to_string()),
                flags.contains(&"avx2")
            );
            assert_eq!(
                cpu.features.contains(&"avx512f".to_string()),
                flags.contains(&"avx512f")
            );
        }
    }
}
