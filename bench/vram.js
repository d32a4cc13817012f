'use strict'

// The VRAM estimates against what llama.cpp and stable-diffusion.cpp report on a Vulkan device
// (bench/estimates.js), on Mesa's lavapipe: `npm run backends` builds them for Vulkan, and
// lavapipe (a CPU device) is used only where GGML_VK_VISIBLE_DEVICES names it. Set it to another
// index to measure a real GPU.
process.env.GGML_VK_VISIBLE_DEVICES ??= '0'

const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { backends } = require('./common')
const { registerModels, printVramTable } = require('./estimates')

async function main() {
  const real = backends()
  const lib = require('..')
  const device = (await lib.systemInfo.getGPUInfo()).devices.find((d) => d.vulkanIndex !== undefined)
  if (!device || real.builds?.llama !== 'vulkan') {
    throw new Error(
      `needs a Vulkan device and Vulkan builds (devices: ${JSON.stringify(device)}, builds: ${JSON.stringify(real.builds)})`,
    )
  }
  console.log(`device: ${device.name} (${device.deviceType}), ${(device.vram / 2 ** 20).toFixed(0)} MiB`)
  lib.configure({ dataDir: fs.mkdtempSync(path.join(os.tmpdir(), 'genai-electron-bench-vram-')) })
  await registerModels(lib, real)
  await printVramTable(lib, real)
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
