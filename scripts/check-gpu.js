'use strict'

// The GPU path on this machine's real GPU, with the backends of `npm run backends` built for
// Vulkan and their tiny models: what detection finds, where llama-server and sd-server put their
// buffers, what the library counts for them, and the orchestrator offloading the LLM when the
// device's memory is the bottleneck. It prints what it saw and fails on what it must not see.
// `npm test` runs the same path on Mesa's lavapipe (__test__/vulkan.test.js); this is for a
// discrete or integrated GPU, where device memory is not the process's RAM.
//
//   GENAI_ELECTRON_TEST_BACKENDS=<backends.json> node scripts/check-gpu.js
//
// Set GGML_VK_VISIBLE_DEVICES to choose among several GPUs, as for llama.cpp itself.

const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { backends, deviceBuffers, serveFiles, downloadTinyImageSet } = require('../__test__/helpers')
const lib = require('..')

const MIB = 2 ** 20
const mib = (bytes) => (bytes == null ? 'n/a' : `${(bytes / MIB).toFixed(1)} MiB`)
const IMAGE = { prompt: 'a red cube', width: 256, height: 256, steps: 2, cfgScale: 1, seed: 7 }
const started = Date.now()
const say = (what, value) =>
  console.log(
    `[${((Date.now() - started) / 1000).toFixed(1)} s] ${what}${value === undefined ? '' : `: ${JSON.stringify(value)}`}`,
  )

async function detection() {
  const gpu = await lib.systemInfo.getGPUInfo()
  for (const d of gpu.devices) say('device', d)
  // A software device counts only where GGML_VK_VISIBLE_DEVICES names it (as for the backends).
  const device = gpu.devices.find((d) => d.deviceType !== 'cpu' || process.env.GGML_VK_VISIBLE_DEVICES)
  assert.ok(device, 'no GPU found (npm test covers lavapipe, which counts only when named)')
  assert.ok(gpu.vulkan, 'the Vulkan loader must be there for the Vulkan builds')
  return device
}

/** Where a process's resident memory is (Linux): the largest mappings by file, in MiB. */
function residentBy(pid) {
  let smaps
  try {
    smaps = fs.readFileSync(`/proc/${pid}/smaps`, 'utf8')
  } catch {
    return null
  }
  const sums = new Map()
  let name = '[anon]'
  for (const line of smaps.split('\n')) {
    const mapping = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line)
    if (mapping) name = path.basename(mapping[1]) || '[anon]'
    const rss = /^Rss:\s+(\d+) kB/.exec(line)
    if (rss) sums.set(name, (sums.get(name) ?? 0) + Number(rss[1]) * 1024)
  }
  return Object.fromEntries(
    [...sums]
      .sort((a, b) => b[1] - a[1])
      .slice(0, 8)
      .map(([file, bytes]) => [file, mib(bytes)]),
  )
}

async function freeOnDevice() {
  const gpu = await lib.systemInfo.getGPUInfo()
  return gpu.vramAvailable
}

async function chat(port) {
  const response = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ messages: [{ role: 'user', content: 'Hello' }], max_tokens: 8 }),
  })
  const body = await response.json()
  assert.equal(response.status, 200, JSON.stringify(body))
  return body.usage
}

async function llmOnTheDevice(model) {
  const server = new lib.LlamaServerManager()
  const before = await freeOnDevice()
  const { port } = await server.start({ modelId: model.id, port: 'auto', threads: 2, contextSize: 4096 })
  try {
    const config = server.getConfig()
    say('llama-server: gpuLayers chosen', config.gpuLayers)
    say('llama-server: runs with', server.getInfo().runningWith)
    assert.equal(config.gpuLayers, model.ggufMetadata.block_count + 1, 'every layer on the device')
    const found = deviceBuffers(await server.getLogs(4000))
    const onDevice = found.model + found.kv + found.compute
    say('llama-server: buffers on Vulkan0', { model: mib(found.model), kv: mib(found.kv), compute: mib(found.compute) })
    assert.ok(found.model > 0 && found.kv > 0, 'the weights and the KV cache are on the device')
    say('chat usage', await chat(port))
    const usage = await server.getMemoryUsage()
    say('getMemoryUsage', { rss: mib(usage.rssBytes), vram: mib(usage.vramBytes) })
    say('resident by mapping', residentBy(usage.pids[0]))
    assert.ok(usage.vramBytes >= onDevice, `${usage.vramBytes} counted, ${onDevice} on the device`)
    const during = await freeOnDevice()
    say('device free before / while it runs', [mib(before), mib(during)])
    const { estimate } = await lib.systemInfo.canRunModel(model, { contextSize: 4096, gpuLayers: config.gpuLayers })
    say('estimate', { source: estimate.source, vram: mib(estimate.vram), ram: mib(estimate.ram) })
    assert.ok(estimate.vram >= onDevice, 'the estimate covers what llama.cpp put on the device')
  } finally {
    await server.stop()
  }
  say('device free after the stop', mib(await freeOnDevice()))

  const off = new lib.LlamaServerManager()
  await off.start({ modelId: model.id, port: 'auto', threads: 2, contextSize: 4096, gpuLayers: 0 })
  try {
    const lines = await off.getLogs(4000)
    assert.deepEqual(deviceBuffers(lines), { model: 0, kv: 0, compute: 0 }, 'gpuLayers: 0 puts nothing there')
    const usage = await off.getMemoryUsage()
    say('gpuLayers 0: getMemoryUsage', { rss: mib(usage.rssBytes), vram: mib(usage.vramBytes) })
    say('gpuLayers 0: resident by mapping', residentBy(usage.pids[0]))
  } finally {
    await off.stop()
  }
}

/** sd's own words on where each part's weights went. */
function sdPlacement(lines) {
  const line = lines.find((l) => l.includes('total params memory size'))
  assert.ok(line, `no params line in:\n${lines.join('\n')}`)
  say('sd', line.trim())
  const part = (name) => new RegExp(`${name} [\\d.]+MB\\((V?RAM)\\)`).exec(line)?.[1]
  return { textEncoders: part('text_encoders'), diffusionModel: part('diffusion_model'), vae: part('vae') }
}

async function imagesOnTheDevice() {
  const server = new lib.DiffusionServerManager()
  const placements = [
    [{}, { textEncoders: 'VRAM', diffusionModel: 'VRAM', vae: 'VRAM' }],
    [
      { clipOnCpu: true, vaeOnCpu: true },
      { textEncoders: 'RAM', diffusionModel: 'VRAM', vae: 'RAM' },
    ],
    [{ gpuLayers: 0 }, { textEncoders: 'RAM', diffusionModel: 'RAM', vae: 'RAM' }],
  ]
  for (const [config, expected] of placements) {
    server.clearLogs()
    await server.start({ modelId: 'tiny-image', backend: 'resident', port: 'auto', threads: 2, ...config })
    try {
      const image = await server.generateImage(IMAGE)
      assert.equal(image.width, IMAGE.width)
      assert.deepEqual(sdPlacement(await server.getLogs(4000)), expected, JSON.stringify(config))
      const usage = await server.getMemoryUsage()
      say(`sd-server ${JSON.stringify(config)}: getMemoryUsage`, {
        rss: mib(usage.rssBytes),
        vram: mib(usage.vramBytes),
      })
      say('resident by mapping', residentBy(usage.pids[0]))
    } finally {
      await server.stop()
    }
  }
}

async function vramAsTheBottleneck(model) {
  const llama = new lib.LlamaServerManager()
  const diffusion = new lib.DiffusionServerManager()
  const info = await llama.start({ modelId: model.id, port: 'auto', threads: 2, contextSize: 4096 })
  await diffusion.start({ modelId: 'tiny-image', backend: 'resident', port: 'auto', threads: 2 })
  try {
    const roomy = new lib.ResourceOrchestrator(undefined, llama, diffusion, undefined, { headroom: 0 })
    const { llm, diffusion: image } = await roomy.estimate(IMAGE)
    say('orchestrator estimates', { llm: mib(llm.vram), image: mib(image.vram) })
    const tight = new lib.ResourceOrchestrator(undefined, llama, diffusion, undefined, {
      vramBudgetBytes: Math.max(llm.vram, image.vram) + MIB,
      ramBudgetBytes: 64 * 2 ** 30,
      headroom: 0,
    })
    assert.equal((await tight.estimate(IMAGE)).bottleneck, 'vram')
    for (const event of ['offload', 'phase', 'reload']) tight.on(event, (e) => say(`orchestrator ${event}`, e))
    let answer
    tight.once('offload', () => {
      answer = chat(info.port)
      answer.catch(() => {})
    })
    const result = await tight.orchestrateImageGeneration(IMAGE)
    assert.equal(result.width, IMAGE.width)
    say('chat held through the offload', await answer)
    const after = llama.getInfo()
    assert.equal(after.port, info.port)
    assert.notEqual(after.pid, info.pid)
    tight.dispose()
    let offloaded = false
    roomy.once('offload', () => (offloaded = true))
    await roomy.orchestrateImageGeneration(IMAGE)
    assert.equal(offloaded, false, 'with room for both nothing restarts')
    roomy.dispose()
  } finally {
    await Promise.all([llama.stop(), diffusion.stop()])
  }
}

async function main() {
  const { paths: real, skip } = backends()
  if (skip) throw new Error(skip)
  assert.equal(real.builds?.llama, 'vulkan', 'needs the Vulkan builds of npm run backends')
  lib.configure({ dataDir: fs.mkdtempSync(path.join(os.tmpdir(), 'genai-electron-gpu-')) })
  process.env.GENAI_ELECTRON_LLAMA_SERVER = real.llamaServer
  process.env.GENAI_ELECTRON_SD_SERVER = real.sdServer
  if (real.sdCli) process.env.GENAI_ELECTRON_SD_CLI = real.sdCli
  say('system', (await lib.systemInfo.detect()).gpu)
  await detection()
  const manager = new lib.ModelManager()
  const model = await serveFiles({ '/tiny.gguf': real.llmModel }, (base) =>
    manager.downloadModel({ source: 'url', url: `${base}/tiny.gguf`, name: 'tiny', type: 'llm' }),
  )
  await downloadTinyImageSet(manager, real)
  const steps = {
    llmOnTheDevice: () => llmOnTheDevice(model),
    imagesOnTheDevice,
    vramAsTheBottleneck: () => vramAsTheBottleneck(model),
  }
  let failed = 0
  for (const [name, step] of Object.entries(steps)) {
    try {
      await step()
      say(`${name}: ok`)
    } catch (err) {
      failed++
      say(`${name}: FAILED`, String(err.stack ?? err))
    }
  }
  process.exitCode = failed ? 1 : 0
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
