import { useEffect, useState } from 'react'
import type { GPUDevice, SystemCapabilities, VulkanDeviceType } from 'genai-electron'
import { api } from '../api'
import { Card, ErrorBox, Facts, ProgressBar, useAction, usePoll } from '../components'
import { formatBytes } from '../format'
import type { TabProps } from '../App'

const KINDS: Record<VulkanDeviceType, string> = {
  discrete: 'discrete GPU',
  integrated: 'integrated GPU',
  virtual: 'virtual GPU',
  cpu: 'software, runs on the CPU',
  other: 'other',
}

/** One GPU (`n`: its number among several): its name, with the vendor where known, what Vulkan says it is, its memory. */
function deviceRows(device: GPUDevice, n: string): [string, string][] {
  const rows: [string, string][] = [[`Device${n}`, device.vendor === 'other' ? device.name : `${device.vendor} ${device.name}`]]
  if (device.deviceType) rows.push([`Kind${n}`, `${KINDS[device.deviceType]} (Vulkan device ${device.vulkanIndex})`])
  rows.push([`VRAM${n}`, formatBytes(device.vram)], [`VRAM available${n}`, formatBytes(device.vramAvailable)])
  return rows
}

export default function SystemInfoTab({ active }: TabProps) {
  const [system, setSystem] = useState<SystemCapabilities | null>(null)
  const { run, error } = useAction()
  const detect = (forceRefresh: boolean) => run(async () => setSystem(await api.system.detect(forceRefresh)))
  useEffect(() => void detect(false), [])
  const memory = usePoll(() => api.system.memory(), 2000, active).value ?? system?.memory
  if (!system) return <div className="tab-body">{error ? <ErrorBox error={error} /> : <p className="muted">Detecting hardware…</p>}</div>
  const { cpu, gpu, recommendations: advice } = system
  const backends = (['cuda', 'vulkan', 'metal', 'rocm'] as const).filter((name) => gpu[name])
  return (
    <div className="tab-body grid">
      <ErrorBox error={error} />
      <Card title="CPU" testId="system-cpu" actions={<button onClick={() => detect(true)}>Detect again</button>}>
        <Facts
          rows={[
            ['Model', cpu.model],
            ['Cores', `${cpu.physicalCores} physical, ${cpu.logicalCores} logical`],
            ['Architecture', cpu.architecture],
            ['Platform', system.platform],
          ]}
        />
      </Card>
      <Card title="Memory" testId="system-memory">
        {memory && (
          <>
            <ProgressBar value={(memory.used / memory.total) * 100} label={`${formatBytes(memory.used)} used of ${formatBytes(memory.total)}`} />
            <Facts rows={[['Total', formatBytes(memory.total)], ['Available', formatBytes(memory.available)], ['Used', formatBytes(memory.used)]]} />
          </>
        )}
      </Card>
      <Card title="GPU" testId="system-gpu">
        {gpu.available ? (
          <Facts
            rows={[
              // Numbered only where there are several.
              ...gpu.devices.flatMap((device, i) => deviceRows(device, gpu.devices.length > 1 ? ` ${i + 1}` : '')),
              ['Backends', backends.join(', ') || 'none detected'],
            ]}
          />
        ) : (
          <p>No GPU detected: models run on the CPU, in system memory.</p>
        )}
      </Card>
      <Card title="Recommendations" testId="system-recommendations">
        <Facts
          rows={[
            ['Largest model', advice.maxModelSize],
            ['Quantizations', advice.recommendedQuantization.join(', ')],
            ['Threads', String(advice.threads)],
            ['GPU acceleration', advice.gpuAcceleration ? 'yes' : 'no'],
          ]}
        />
        <p className="muted">Detected {new Date(system.detectedAt).toLocaleString()}</p>
      </Card>
    </div>
  )
}
