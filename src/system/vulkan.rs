//! Vulkan devices as llama.cpp and stable-diffusion.cpp see them, read in-process through the
//! Vulkan loader (loaded at run time with `ash`, so a machine without Vulkan still loads the
//! addon and simply has no Vulkan devices).
//!
//! Both backends vendor ggml, whose Vulkan backend picks devices this way: the indices listed in
//! `GGML_VK_VISIBLE_DEVICES` when it is set (any type, a CPU-type software driver such as Mesa's
//! lavapipe included), and otherwise every discrete or integrated GPU, one per device UUID. Its
//! memory figures are the device-local heaps (every heap for an integrated GPU): their size, and
//! `budget - usage` as free where `VK_EXT_memory_budget` is there, else the size again. The same
//! rules here keep detection from counting a CPU as VRAM, and let tests run on lavapipe.

use ash::vk;

use super::gpu::{GpuDevice, GpuProbe, GpuVendor};

/// What a physical device is, as Vulkan says (`VkPhysicalDeviceType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, ts_rs::TS)]
#[serde(rename_all = "lowercase")]
#[ts(rename = "VulkanDeviceType")]
pub enum DeviceType {
    Discrete,
    Integrated,
    Virtual,
    /// A software driver running on the CPU (lavapipe).
    Cpu,
    Other,
}

impl From<vk::PhysicalDeviceType> for DeviceType {
    fn from(kind: vk::PhysicalDeviceType) -> Self {
        match kind {
            vk::PhysicalDeviceType::DISCRETE_GPU => DeviceType::Discrete,
            vk::PhysicalDeviceType::INTEGRATED_GPU => DeviceType::Integrated,
            vk::PhysicalDeviceType::VIRTUAL_GPU => DeviceType::Virtual,
            vk::PhysicalDeviceType::CPU => DeviceType::Cpu,
            _ => DeviceType::Other,
        }
    }
}

/// One physical device, in the loader's order (the index `GGML_VK_VISIBLE_DEVICES` names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhysicalDevice {
    pub index: u32,
    pub vendor_id: u32,
    pub name: String,
    pub kind: DeviceType,
    pub uuid: [u8; 16],
    /// Device-local heaps (all heaps for an integrated GPU), summed.
    pub total: u64,
    /// `budget - usage` over the same heaps where `VK_EXT_memory_budget` is there.
    pub budget_free: Option<u64>,
}

impl PhysicalDevice {
    fn into_gpu(self) -> GpuDevice {
        let shared = matches!(self.kind, DeviceType::Integrated | DeviceType::Cpu);
        GpuDevice {
            vendor: vendor_of(self.vendor_id),
            name: self.name,
            vram_total: Some(self.total),
            vram_free: Some(self.budget_free.unwrap_or(self.total)),
            unified_memory: shared,
            device_type: Some(self.kind),
            vulkan_index: Some(self.index),
            uuid: Some(self.uuid),
        }
    }
}

/// PCI vendor ids (Khronos' registry for Mesa's software drivers).
fn vendor_of(id: u32) -> GpuVendor {
    match id {
        0x10de => GpuVendor::Nvidia,
        0x1002 | 0x1022 => GpuVendor::Amd,
        0x8086 => GpuVendor::Intel,
        0x106b => GpuVendor::Apple,
        _ => GpuVendor::Other,
    }
}

/// The devices ggml would use, from every physical device and `GGML_VK_VISIBLE_DEVICES`'s value.
/// An index that names no device is left out (ggml refuses to start with it: the backends' own
/// log says so).
pub fn visible(devices: Vec<PhysicalDevice>, listed: Option<&str>) -> Vec<PhysicalDevice> {
    match listed {
        Some(list) => {
            let wanted: Vec<u32> = list
                .split([',', ' '])
                .filter_map(|i| i.trim().parse().ok())
                .collect();
            wanted
                .iter()
                .filter_map(|i| devices.iter().find(|d| d.index == *i).cloned())
                .collect()
        }
        None => {
            let mut chosen: Vec<PhysicalDevice> = Vec::new();
            for device in devices {
                let gpu = matches!(device.kind, DeviceType::Discrete | DeviceType::Integrated);
                // The same GPU seen through two drivers (RADV and AMDVLK) is one device.
                if gpu && !chosen.iter().any(|c| c.uuid == device.uuid) {
                    chosen.push(device);
                }
            }
            chosen
        }
    }
}

/// Every physical device the loader reports; empty without a loader or a driver.
pub fn physical_devices() -> Vec<PhysicalDevice> {
    match read_devices() {
        Ok(devices) => devices,
        Err(reason) => {
            tracing::debug!("no Vulkan devices: {reason}");
            Vec::new()
        }
    }
}

fn read_devices() -> Result<Vec<PhysicalDevice>, String> {
    // SAFETY: loads the system's Vulkan loader; its initialisers only set up its own state.
    let entry = unsafe { ash::Entry::load() }.map_err(|e| format!("no Vulkan loader: {e}"))?;
    // SAFETY: a valid entry; the call has no preconditions.
    let version = unsafe { entry.try_enumerate_instance_version() }
        .map_err(|e| e.to_string())?
        .unwrap_or(vk::API_VERSION_1_0);
    if version < vk::API_VERSION_1_1 {
        return Err("the Vulkan loader is older than 1.1".into());
    }
    let app = vk::ApplicationInfo::default()
        .application_name(c"genai-electron")
        .api_version(vk::API_VERSION_1_1);
    let create = vk::InstanceCreateInfo::default().application_info(&app);
    // SAFETY: `create` and what it points to live across the call.
    let instance = unsafe { entry.create_instance(&create, None) }
        .map_err(|e| format!("vkCreateInstance: {e}"))?;
    let devices = read_with(&instance);
    // SAFETY: nothing made from the instance outlives this call.
    unsafe { instance.destroy_instance(None) };
    devices
}

fn read_with(instance: &ash::Instance) -> Result<Vec<PhysicalDevice>, String> {
    // SAFETY: a live instance.
    let handles = unsafe { instance.enumerate_physical_devices() }
        .map_err(|e| format!("vkEnumeratePhysicalDevices: {e}"))?;
    Ok(handles
        .into_iter()
        .zip(0u32..)
        .map(|(handle, index)| describe(instance, handle, index))
        .collect())
}

fn describe(instance: &ash::Instance, handle: vk::PhysicalDevice, index: u32) -> PhysicalDevice {
    let mut id = vk::PhysicalDeviceIDProperties::default();
    let mut properties = vk::PhysicalDeviceProperties2::default().push_next(&mut id);
    // SAFETY: a device of this live instance; `properties` chains only `id`.
    unsafe { instance.get_physical_device_properties2(handle, &mut properties) };
    let base = properties.properties;
    let name = base
        .device_name_as_c_str()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|_| format!("Vulkan device {index}"));
    let kind = DeviceType::from(base.device_type);
    let (total, budget_free) = memory(instance, handle, kind == DeviceType::Integrated);
    PhysicalDevice {
        index,
        vendor_id: base.vendor_id,
        name,
        kind,
        uuid: id.device_uuid,
        total,
        budget_free,
    }
}

/// The device's memory as ggml counts it: (total, free by the budget where there is one).
fn memory(
    instance: &ash::Instance,
    handle: vk::PhysicalDevice,
    integrated: bool,
) -> (u64, Option<u64>) {
    let budgeted = has_memory_budget(instance, handle);
    let mut budget = vk::PhysicalDeviceMemoryBudgetPropertiesEXT::default();
    let mut properties = vk::PhysicalDeviceMemoryProperties2::default();
    if budgeted {
        properties = properties.push_next(&mut budget);
    }
    // SAFETY: a device of this live instance; the budget is chained only where supported.
    unsafe { instance.get_physical_device_memory_properties2(handle, &mut properties) };
    let heaps = properties.memory_properties;
    let counted: Vec<usize> = (0..heaps.memory_heap_count as usize)
        .filter(|&i| {
            integrated
                || heaps.memory_heaps[i]
                    .flags
                    .contains(vk::MemoryHeapFlags::DEVICE_LOCAL)
        })
        .collect();
    let total = counted.iter().map(|&i| heaps.memory_heaps[i].size).sum();
    let free = budgeted.then(|| {
        counted
            .iter()
            .map(|&i| budget.heap_budget[i].saturating_sub(budget.heap_usage[i]))
            .sum()
    });
    (total, free)
}

fn has_memory_budget(instance: &ash::Instance, handle: vk::PhysicalDevice) -> bool {
    // SAFETY: a device of this live instance.
    let Ok(extensions) = (unsafe { instance.enumerate_device_extension_properties(handle) }) else {
        return false;
    };
    extensions
        .iter()
        .any(|e| e.extension_name_as_c_str() == Ok(ash::ext::memory_budget::NAME))
}

/// Vulkan devices through the loader, chosen as ggml chooses them (see the module's doc);
/// `listed` is `GGML_VK_VISIBLE_DEVICES`, read at each detection unless fixed here.
pub struct VulkanProbe {
    pub listed: Option<Option<String>>,
}

impl VulkanProbe {
    /// Reads `GGML_VK_VISIBLE_DEVICES` from the environment at each detection.
    pub fn from_env() -> Self {
        VulkanProbe { listed: None }
    }
}

impl GpuProbe for VulkanProbe {
    fn devices(&self) -> Vec<GpuDevice> {
        let listed = match &self.listed {
            Some(fixed) => fixed.clone(),
            None => std::env::var("GGML_VK_VISIBLE_DEVICES").ok(),
        };
        visible(physical_devices(), listed.as_deref())
            .into_iter()
            .map(PhysicalDevice::into_gpu)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(index: u32, kind: DeviceType, uuid: u8) -> PhysicalDevice {
        PhysicalDevice {
            index,
            vendor_id: 0x1002,
            name: format!("device {index}"),
            kind,
            uuid: [uuid; 16],
            total: 8 << 30,
            budget_free: None,
        }
    }

    fn indices(devices: Vec<PhysicalDevice>) -> Vec<u32> {
        devices.into_iter().map(|d| d.index).collect()
    }

    #[test]
    fn by_default_gpus_only_and_each_once_as_ggml_chooses() {
        let all = vec![
            device(0, DeviceType::Cpu, 1),
            device(1, DeviceType::Discrete, 2),
            // The same GPU through a second driver.
            device(2, DeviceType::Discrete, 2),
            device(3, DeviceType::Integrated, 3),
            device(4, DeviceType::Virtual, 4),
        ];
        assert_eq!(indices(visible(all.clone(), None)), [1, 3]);
        // Listed: exactly those, in that order, a CPU device included; unknown indices left out.
        assert_eq!(indices(visible(all.clone(), Some("3,0"))), [3, 0]);
        assert_eq!(indices(visible(all.clone(), Some(" 2 9,x"))), [2]);
        assert!(visible(all, Some("")).is_empty());
    }

    #[test]
    fn a_device_becomes_a_gpu_with_its_vendor_type_and_memory() {
        let mut budgeted = device(1, DeviceType::Discrete, 2);
        budgeted.budget_free = Some(3 << 30);
        let gpu = budgeted.into_gpu();
        assert_eq!(gpu.vendor, GpuVendor::Amd);
        assert_eq!(
            (gpu.vram_total, gpu.vram_free),
            (Some(8 << 30), Some(3 << 30))
        );
        assert_eq!(
            (gpu.device_type, gpu.vulkan_index),
            (Some(DeviceType::Discrete), Some(1))
        );
        assert!(!gpu.unified_memory);
        // Without the budget extension, as ggml: free is the heap's size.
        let software = device(0, DeviceType::Cpu, 1).into_gpu();
        assert_eq!(software.vram_free, software.vram_total);
        assert!(software.unified_memory);
        for (id, vendor) in [
            (0x10de, GpuVendor::Nvidia),
            (0x8086, GpuVendor::Intel),
            (0x106b, GpuVendor::Apple),
            (0x10005, GpuVendor::Other),
        ] {
            assert_eq!(vendor_of(id), vendor);
        }
    }

    /// Mesa's lavapipe, which `npm test` installs: a CPU-type device, seen only when listed.
    #[test]
    fn lavapipe_is_seen_through_the_loader_only_when_listed() {
        let all = physical_devices();
        let Some(lavapipe) = all.iter().find(|d| d.name.contains("llvmpipe")) else {
            assert!(
                std::env::var_os("GENAI_ELECTRON_REQUIRE_VULKAN").is_none(),
                "no lavapipe among the Vulkan devices: {all:?}"
            );
            eprintln!("SKIPPED: no Vulkan loader with Mesa's lavapipe (npm test installs it)");
            return;
        };
        assert_eq!(lavapipe.kind, DeviceType::Cpu);
        assert_eq!(vendor_of(lavapipe.vendor_id), GpuVendor::Other);
        assert!(lavapipe.total > 0);
        let unlisted = VulkanProbe { listed: Some(None) }.devices();
        assert!(
            unlisted
                .iter()
                .all(|d| d.device_type != Some(DeviceType::Cpu)),
            "{unlisted:?}"
        );
        let listed = VulkanProbe {
            listed: Some(Some(lavapipe.index.to_string())),
        }
        .devices();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].name, lavapipe.name);
        assert_eq!(listed[0].vram_total, Some(lavapipe.total));
        // lavapipe has no VK_EXT_memory_budget: free is the heap, as ggml reports it.
        assert_eq!(lavapipe.budget_free, None);
        assert_eq!(listed[0].vram_free, Some(lavapipe.total));
    }
}
