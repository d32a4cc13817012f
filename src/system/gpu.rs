//! GPU detection behind the [`GpuProbe`] trait: NVIDIA through NVML (loaded at run time, so a
//! machine without the driver simply reports no NVIDIA GPU), AMD and Intel through Linux sysfs,
//! Apple Silicon as unified memory, and every OS's Vulkan devices as the backends choose them
//! (see [`super::vulkan`]).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::Serialize;
use ts_rs::TS;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "lowercase")]
#[ts(rename = "GPUVendor")]
pub enum GpuVendor {
    Nvidia,
    Amd,
    Apple,
    Intel,
    /// Another vendor, or a software driver (Mesa's lavapipe), seen through Vulkan.
    Other,
}

impl GpuVendor {
    pub fn as_str(self) -> &'static str {
        match self {
            GpuVendor::Nvidia => "nvidia",
            GpuVendor::Amd => "amd",
            GpuVendor::Apple => "apple",
            GpuVendor::Intel => "intel",
            GpuVendor::Other => "other",
        }
    }
}

/// One GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(rename = "GPUDevice")]
pub struct GpuDevice {
    pub vendor: GpuVendor,
    pub name: String,
    /// Dedicated memory in bytes, when the driver reports it (not for integrated GPUs).
    #[serde(rename = "vram", skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub vram_total: Option<u64>,
    /// Free dedicated memory in bytes, when the driver reports it.
    #[serde(rename = "vramAvailable", skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub vram_free: Option<u64>,
    /// True where the GPU shares system RAM (Apple Silicon, most Intel GPUs).
    pub unified_memory: bool,
    /// What Vulkan says the device is, where it was found through Vulkan.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub device_type: Option<super::vulkan::DeviceType>,
    /// Its index among Vulkan's devices: what `GGML_VK_VISIBLE_DEVICES` names.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub vulkan_index: Option<u32>,
}

/// What the machine's GPUs add up to, with the primary one (most memory) spelled out.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(rename = "GPUInfo")]
pub struct GpuInfo {
    pub available: bool,
    /// Vendor of the primary GPU (the one with most memory).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub vendor: Option<GpuVendor>,
    /// The same as `vendor`: genai-electron 0.26's name for it.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub kind: Option<GpuVendor>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub name: Option<String>,
    /// Total memory of the primary GPU in bytes.
    #[serde(rename = "vram", skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub vram_total: Option<u64>,
    /// Free memory of the primary GPU in bytes.
    #[serde(rename = "vramAvailable", skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub vram_free: Option<u64>,
    /// An NVIDIA GPU with its driver is present, so CUDA builds can run.
    pub cuda: bool,
    /// A Vulkan loader and a GPU are present, so Vulkan builds can run.
    pub vulkan: bool,
    /// macOS with a GPU: Metal builds run.
    pub metal: bool,
    /// An AMD GPU and the ROCm kernel driver (`/dev/kfd`) are present.
    pub rocm: bool,
    pub devices: Vec<GpuDevice>,
}

/// One source of GPU facts. Probes never fail: a missing driver means no devices.
pub trait GpuProbe: Send + Sync {
    fn devices(&self) -> Vec<GpuDevice>;
}

/// Runtime facts that are not about one device.
#[derive(Debug, Clone, Copy, Default)]
pub struct RuntimeHints {
    pub vulkan_loader: bool,
    pub rocm_driver: bool,
    pub macos: bool,
}

impl RuntimeHints {
    pub fn detect() -> Self {
        RuntimeHints {
            vulkan_loader: vulkan_loader_present(),
            rocm_driver: cfg!(target_os = "linux") && Path::new("/dev/kfd").exists(),
            macos: cfg!(target_os = "macos"),
        }
    }
}

pub fn summarize(devices: Vec<GpuDevice>, hints: RuntimeHints) -> GpuInfo {
    let primary = devices
        .iter()
        .max_by_key(|d| (d.vram_total.unwrap_or(0), d.vendor != GpuVendor::Intel))
        .cloned();
    let has = |v: GpuVendor| devices.iter().any(|d| d.vendor == v);
    GpuInfo {
        available: primary.is_some(),
        vendor: primary.as_ref().map(|d| d.vendor),
        kind: primary.as_ref().map(|d| d.vendor),
        name: primary.as_ref().map(|d| d.name.clone()),
        vram_total: primary.as_ref().and_then(|d| d.vram_total),
        vram_free: primary.as_ref().and_then(|d| d.vram_free),
        cuda: has(GpuVendor::Nvidia),
        vulkan: hints.vulkan_loader && !devices.is_empty() && !hints.macos,
        metal: hints.macos && !devices.is_empty(),
        rocm: has(GpuVendor::Amd) && hints.rocm_driver,
        devices,
    }
}

pub fn default_probes() -> Vec<std::sync::Arc<dyn GpuProbe>> {
    let mut probes: Vec<std::sync::Arc<dyn GpuProbe>> = vec![std::sync::Arc::new(NvmlProbe)];
    if cfg!(target_os = "linux") {
        probes.push(std::sync::Arc::new(DrmSysfsProbe::new("/sys/class/drm")));
    }
    #[cfg(all(target_os = "macos", target_arch = "aarch64"))]
    probes.push(std::sync::Arc::new(AppleSiliconProbe));
    // Last: it fills in what the others cannot see (AMD and Intel on Windows, software drivers).
    probes.push(std::sync::Arc::new(super::vulkan::VulkanProbe::from_env()));
    probes
}

/// The devices of every probe, each GPU once: a Vulkan device of a vendor that NVML, sysfs or
/// Apple's probe already reported is that GPU again, and theirs is kept (it knows the live memory
/// use: NVML per process, sysfs the driver's counters).
pub fn one_per_gpu(devices: Vec<GpuDevice>) -> Vec<GpuDevice> {
    let native: Vec<GpuVendor> = devices
        .iter()
        .filter(|d| d.vulkan_index.is_none())
        .map(|d| d.vendor)
        .collect();
    devices
        .into_iter()
        .filter(|d| d.vulkan_index.is_none() || !native.contains(&d.vendor))
        .collect()
}

/// NVIDIA GPUs through the driver's NVML library, opened once per process.
pub struct NvmlProbe;

fn nvml() -> Option<&'static nvml_wrapper::Nvml> {
    static NVML: OnceLock<Option<nvml_wrapper::Nvml>> = OnceLock::new();
    NVML.get_or_init(|| match nvml_wrapper::Nvml::init() {
        Ok(nvml) => Some(nvml),
        Err(err) => {
            tracing::debug!("NVML not available: {err}");
            None
        }
    })
    .as_ref()
}

impl GpuProbe for NvmlProbe {
    fn devices(&self) -> Vec<GpuDevice> {
        let Some(nvml) = nvml() else {
            return Vec::new();
        };
        let count = nvml.device_count().unwrap_or(0);
        (0..count)
            .filter_map(|i| nvml.device_by_index(i).ok())
            .map(|device| {
                let memory = device.memory_info().ok();
                GpuDevice {
                    vendor: GpuVendor::Nvidia,
                    name: device.name().unwrap_or_else(|_| "NVIDIA GPU".into()),
                    vram_total: memory.as_ref().map(|m| m.total),
                    vram_free: memory.as_ref().map(|m| m.free),
                    unified_memory: false,
                    device_type: None,
                    vulkan_index: None,
                }
            })
            .collect()
    }
}

/// VRAM that the processes `pids` hold on NVIDIA GPUs (compute and graphics contexts, every
/// device), summed; `None` without NVML, or where the driver does not report per-process use
/// (Windows under WDDM).
pub fn vram_of_processes(pids: &[u32]) -> Option<u64> {
    use nvml_wrapper::enums::device::UsedGpuMemory;
    let nvml = nvml()?;
    let mut total = 0;
    for device in (0..nvml.device_count().ok()?).filter_map(|i| nvml.device_by_index(i).ok()) {
        let compute = device.running_compute_processes().unwrap_or_default();
        let graphics = device.running_graphics_processes().unwrap_or_default();
        // A process with both kinds of context is listed twice with the same figure.
        let mut seen = std::collections::HashSet::new();
        for process in compute.into_iter().chain(graphics) {
            if !pids.contains(&process.pid) || !seen.insert(process.pid) {
                continue;
            }
            match process.used_gpu_memory {
                UsedGpuMemory::Used(bytes) => total += bytes,
                UsedGpuMemory::Unavailable => return None,
            }
        }
    }
    Some(total)
}

/// AMD and Intel GPUs from `/sys/class/drm/cardN/device` (Linux). NVIDIA cards are left to NVML,
/// which knows their memory.
pub struct DrmSysfsProbe {
    root: PathBuf,
}

impl DrmSysfsProbe {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DrmSysfsProbe { root: root.into() }
    }
}

impl GpuProbe for DrmSysfsProbe {
    fn devices(&self) -> Vec<GpuDevice> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut cards: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|e| is_card_name(&e.file_name().to_string_lossy()))
            .map(|e| e.path().join("device"))
            .collect();
        cards.sort();
        cards.iter().filter_map(|dev| sysfs_device(dev)).collect()
    }
}

/// `card0` but not the connector entries such as `card0-DP-1`.
fn is_card_name(name: &str) -> bool {
    name.strip_prefix("card")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn sysfs_device(dev: &Path) -> Option<GpuDevice> {
    let read = |f: &str| {
        std::fs::read_to_string(dev.join(f))
            .ok()
            .map(|s| s.trim().to_string())
    };
    let read_u64 = |f: &str| read(f).and_then(|s| s.parse::<u64>().ok());
    let vendor = match read("vendor")?.to_ascii_lowercase().as_str() {
        "0x1002" => GpuVendor::Amd,
        "0x8086" => GpuVendor::Intel,
        _ => return None,
    };
    let device_id = read("device").unwrap_or_default();
    let name = read("product_name")
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| {
            format!("{} GPU {}", vendor_label(vendor), device_id)
                .trim()
                .to_string()
        });
    let total = read_u64("mem_info_vram_total").filter(|&t| t > 0);
    let used = read_u64("mem_info_vram_used");
    Some(GpuDevice {
        vendor,
        name,
        vram_total: total,
        vram_free: total.zip(used).map(|(t, u)| t.saturating_sub(u)),
        // An AMD APU reports a small carve-out as VRAM; without the counters it is shared memory.
        unified_memory: total.is_none(),
        device_type: None,
        vulkan_index: None,
    })
}

fn vendor_label(vendor: GpuVendor) -> &'static str {
    match vendor {
        GpuVendor::Nvidia => "NVIDIA",
        GpuVendor::Amd => "AMD",
        GpuVendor::Apple => "Apple",
        GpuVendor::Intel => "Intel",
        GpuVendor::Other => "Other",
    }
}

/// Apple Silicon: the GPU shares the system RAM, so its "VRAM" is the RAM Metal may use.
#[cfg(all(target_os = "macos", target_arch = "aarch64"))]
pub struct AppleSiliconProbe;

#[cfg(all(target_os = "macos", target_arch = "aarch64"))]
impl GpuProbe for AppleSiliconProbe {
    fn devices(&self) -> Vec<GpuDevice> {
        let mem = super::memory::detect_memory();
        let cpu = super::cpu::detect_cpu();
        vec![GpuDevice {
            vendor: GpuVendor::Apple,
            name: format!("{} GPU", cpu.model),
            vram_total: Some(mem.total),
            vram_free: Some(mem.available),
            unified_memory: true,
            device_type: None,
            vulkan_index: None,
        }]
    }
}

fn vulkan_loader_present() -> bool {
    let name = if cfg!(windows) {
        "vulkan-1.dll"
    } else if cfg!(target_os = "macos") {
        "libvulkan.1.dylib"
    } else {
        "libvulkan.so.1"
    };
    // SAFETY: the Vulkan loader's initialisers only set up its own state; nothing is called.
    unsafe { libloading::Library::new(name) }.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_card(root: &Path, card: &str, files: &[(&str, &str)]) {
        let dev = root.join(card).join("device");
        std::fs::create_dir_all(&dev).unwrap();
        for (name, content) in files {
            std::fs::write(dev.join(name), format!("{content}\n")).unwrap();
        }
    }

    #[test]
    fn a_vulkan_device_of_a_vendor_another_probe_saw_is_that_gpu_again() {
        let gpu = |vendor, vulkan_index| GpuDevice {
            vendor,
            name: format!("{vendor:?}"),
            vram_total: Some(1 << 30),
            vram_free: None,
            unified_memory: false,
            device_type: None,
            vulkan_index,
        };
        let kept = one_per_gpu(vec![
            gpu(GpuVendor::Nvidia, None),
            gpu(GpuVendor::Nvidia, Some(0)),
            gpu(GpuVendor::Amd, Some(1)),
            gpu(GpuVendor::Other, Some(2)),
        ]);
        let seen: Vec<_> = kept.iter().map(|d| (d.vendor, d.vulkan_index)).collect();
        assert_eq!(
            seen,
            [
                (GpuVendor::Nvidia, None),
                (GpuVendor::Amd, Some(1)),
                (GpuVendor::Other, Some(2))
            ]
        );
    }

    #[test]
    fn sysfs_reads_amd_vram_and_intel_and_skips_others() {
        let tmp = tempfile::tempdir().unwrap();
        let gib = 1u64 << 30;
        write_card(
            tmp.path(),
            "card0",
            &[
                ("vendor", "0x1002"),
                ("device", "0x744c"),
                ("mem_info_vram_total", &(16 * gib).to_string()),
                ("mem_info_vram_used", &(gib).to_string()),
            ],
        );
        write_card(
            tmp.path(),
            "card1",
            &[("vendor", "0x8086"), ("device", "0x46a6")],
        );
        write_card(tmp.path(), "card2", &[("vendor", "0x10de")]);
        write_card(tmp.path(), "card0-DP-1", &[("vendor", "0x1002")]);
        let devices = DrmSysfsProbe::new(tmp.path()).devices();
        assert_eq!(devices.len(), 2, "{devices:?}");
        assert_eq!(devices[0].vendor, GpuVendor::Amd);
        assert_eq!(devices[0].name, "AMD GPU 0x744c");
        assert_eq!(devices[0].vram_total, Some(16 * gib));
        assert_eq!(devices[0].vram_free, Some(15 * gib));
        assert_eq!(devices[1].vendor, GpuVendor::Intel);
        assert!(devices[1].unified_memory);

        let info = summarize(
            devices,
            RuntimeHints {
                vulkan_loader: true,
                rocm_driver: true,
                macos: false,
            },
        );
        assert!(info.available && info.rocm && info.vulkan && !info.cuda && !info.metal);
        assert_eq!(info.vendor, Some(GpuVendor::Amd));
        assert_eq!(info.vram_total, Some(16 * gib));
    }

    #[test]
    fn missing_sysfs_root_means_no_devices() {
        assert!(DrmSysfsProbe::new("/nonexistent/drm").devices().is_empty());
    }

    #[test]
    fn no_devices_means_no_gpu_and_no_hints() {
        let info = summarize(
            Vec::new(),
            RuntimeHints {
                vulkan_loader: true,
                rocm_driver: true,
                macos: false,
            },
        );
        assert_eq!(
            info,
            GpuInfo {
                available: false,
                ..Default::default()
            }
        );
    }

    #[test]
    fn nvml_without_driver_reports_nothing_and_does_not_fail() {
        // On a machine with the NVIDIA driver this lists real devices, each with memory figures.
        for device in NvmlProbe.devices() {
            assert_eq!(device.vendor, GpuVendor::Nvidia);
            assert!(device.vram_total.is_some());
        }
    }
}
