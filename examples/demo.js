'use strict'

// Prints what genai-electron detects on this machine, as a table.
const { systemInfo, getDataPaths } = require('..')

const GB = 1024 ** 3
const gb = (bytes) => (bytes === undefined ? '-' : `${(bytes / GB).toFixed(1)} GB`)

async function main() {
  const caps = await systemInfo.detect()
  const paths = await getDataPaths()
  const { cpu, memory, gpu, recommendations: rec } = caps
  console.table({
    'CPU': `${cpu.model} (${cpu.physicalCores} physical / ${cpu.logicalCores} logical, ${cpu.architecture})`,
    'SIMD': cpu.features.join(' ') || '-',
    'RAM': `${gb(memory.available)} free of ${gb(memory.total)}`,
    'GPU': gpu.available ? `${gpu.name} (${gpu.vendor}), ${gb(gpu.vramAvailable)} free of ${gb(gpu.vram)}` : 'none',
    'GPU runtimes': ['cuda', 'vulkan', 'metal', 'rocm'].filter((k) => gpu[k]).join(' ') || 'none (CPU backends)',
    'Platform': caps.platform,
    'Largest model': `${rec.maxModelSize} (${gb(rec.maxModelBytes)} file), ${rec.recommendedQuantization.join('/')}`,
    'Threads': rec.threads,
    'Data folder': `${paths.root} (from ${paths.source})`,
  })
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
