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
    /// The device's UUID where its driver tells it (NVML, Vulkan): the same GPU seen by two
    /// probes has the same one.
    #[serde(skip)]
    #[ts(skip)]
    pub uuid: Option<[u8; 16]>,
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

/// The devices of every probe, each GPU once: a Vulkan device that NVML, sysfs or Apple's probe
/// already reported is that GPU again, and theirs is kept (it knows the live memory use: NVML per
/// process, sysfs the driver's counters), with what Vulkan adds (its type, and the index that
/// `GGML_VK_VISIBLE_DEVICES` names). The same GPU is the same UUID where both know it; else the
/// only device of its vendor on both sides.
pub fn one_per_gpu(devices: Vec<GpuDevice>) -> Vec<GpuDevice> {
    let (vulkan, mut native): (Vec<GpuDevice>, Vec<GpuDevice>) =
        devices.into_iter().partition(|d| d.vulkan_index.is_some());
    let mut unmatched = Vec::new();
    for seen in vulkan {
        match same_gpu(&native, &of_vendor(seen.vendor, &native), &seen) {
            Some(i) => {
                native[i].device_type = seen.device_type;
                native[i].vulkan_index = seen.vulkan_index;
            }
            // A vendor the others saw, but not this device of it: an unknown match is dropped
            // rather than counted twice.
            None if native.iter().any(|d| d.vendor == seen.vendor) => {}
            None => unmatched.push(seen),
        }
    }
    native.extend(unmatched);
    native
}

/// The indices of `vendor`'s devices in `native`.
fn of_vendor(vendor: GpuVendor, native: &[GpuDevice]) -> Vec<usize> {
    (0..native.len())
        .filter(|&i| native[i].vendor == vendor)
        .collect()
}

fn same_gpu(native: &[GpuDevice], of_vendor: &[usize], seen: &GpuDevice) -> Option<usize> {
    let by_uuid = of_vendor
        .iter()
        .copied()
        .find(|&i| seen.uuid.is_some() && native[i].uuid == seen.uuid);
    let only = match of_vendor {
        [i] if native[*i].vulkan_index.is_none() => Some(*i),
        _ => None,
    };
    by_uuid.or(only)
}

/// NVML's UUID (`GPU-8e0b1f3a-…`, hex digits in Vulkan's byte order).
fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let hex: String = text
        .trim_start_matches("GPU-")
        .chars()
        .filter(|c| *c != '-')
        .collect();
    if hex.len() != 32 {
        return None;
    }
    let mut uuid = [0u8; 16];
    for (i, byte) in uuid.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(uuid)
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
                    uuid: device.uuid().ok().as_deref().and_then(parse_uuid),
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
        uuid: None,
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
            uuid: None,
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

    fn device(vendor: GpuVendor, vulkan_index: Option<u32>, uuid: Option<u8>) -> GpuDevice {
        GpuDevice {
            vendor,
            name: format!("{vendor:?}"),
            vram_total: Some(1 << 30),
            vram_free: None,
            unified_memory: false,
            device_type: vulkan_index.map(|_| super::super::vulkan::DeviceType::Discrete),
            vulkan_index,
            uuid: uuid.map(|u| [u; 16]),
        }
    }

    #[test]
    fn a_vulkan_device_another_probe_saw_is_that_gpu_again_with_vulkans_index() {
        use GpuVendor::*;
        let kept = one_per_gpu(vec![
            device(Nvidia, None, None),
            device(Nvidia, Some(0), Some(7)),
            device(Amd, Some(1), None),
            device(Other, Some(2), None),
        ]);
        let seen: Vec<_> = kept.iter().map(|d| (d.vendor, d.vulkan_index)).collect();
        // The only NVIDIA GPU on both sides is one GPU: NVML's, with Vulkan's index and type.
        assert_eq!(seen, [(Nvidia, Some(0)), (Amd, Some(1)), (Other, Some(2))]);
        assert!(kept[0].device_type.is_some());
    }

    #[test]
    fn several_gpus_of_one_vendor_are_told_apart_by_uuid() {
        use GpuVendor::*;
        let kept = one_per_gpu(vec![
            device(Nvidia, None, Some(1)),
            device(Nvidia, None, Some(2)),
            // Vulkan lists them the other way round, and one more of the vendor's that NVML
            // did not report: not counted twice.
            device(Nvidia, Some(0), Some(2)),
            device(Nvidia, Some(1), Some(1)),
            device(Nvidia, Some(2), Some(3)),
        ]);
        let seen: Vec<_> = kept
            .iter()
            .map(|d| (d.uuid.unwrap()[0], d.vulkan_index))
            .collect();
        assert_eq!(seen, [(1, Some(1)), (2, Some(0))]);
        // Without UUIDs two of a vendor cannot be told apart: no index is guessed.
        let kept = one_per_gpu(vec![
            device(Amd, None, None),
            device(Amd, None, None),
            device(Amd, Some(0), None),
        ]);
        assert!(kept.iter().all(|d| d.vulkan_index.is_none()) && kept.len() == 2);
    }

    #[test]
    fn nvml_uuids_read_as_vulkan_bytes() {
        let uuid = parse_uuid("GPU-8e0b1f3a-0011-2233-4455-66778899aabb").unwrap();
        assert_eq!(uuid[..4], [0x8e, 0x0b, 0x1f, 0x3a]);
        assert_eq!(uuid[15], 0xbb);
        assert_eq!(parse_uuid("GPU-8e0b"), None);
        assert_eq!(parse_uuid("GPU-zz0b1f3a-0011-2233-4455-66778899aabb"), None);
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
