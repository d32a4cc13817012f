'use strict'

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const { systemInfo, SystemInfo, ValidationError, GenaiElectronError } = require('..')
const { assertLoopFree, runNode } = require('./helpers')

const isLinux = process.platform === 'linux'

function meminfoBytes(key) {
  const line = fs
    .readFileSync('/proc/meminfo', 'utf8')
    .split('\n')
    .find((l) => l.startsWith(key))
  return Number(line.split(/\s+/)[1]) * 1024
}

// SmolLM2-135M-Instruct Q4_1, as its GGUF header describes it.
const SMOLLM2 = {
  size: 98_362_432,
  ggufMetadata: {
    block_count: 30,
    context_length: 8192,
    embedding_length: 576,
    attention_head_count: 9,
    attention_head_count_kv: 3,
  },
}

test('systemInfo is the shared instance', () => {
  assert.equal(systemInfo, SystemInfo.getInstance())
  assert.ok(systemInfo instanceof require('node:events').EventEmitter)
})

test('detect() reports this machine', async () => {
  const caps = await systemInfo.detect(true)
  assert.equal(caps.platform, process.platform)
  assert.equal(caps.cpu.architecture, process.arch)
  assert.equal(caps.cpu.logicalCores, os.cpus().length)
  assert.equal(caps.cpu.cores, caps.cpu.logicalCores)
  assert.ok(caps.cpu.physicalCores >= 1 && caps.cpu.physicalCores <= caps.cpu.logicalCores)
  assert.equal(caps.cpu.model, os.cpus()[0].model.trim())
  assert.ok(Array.isArray(caps.cpu.features))
  assert.equal(caps.memory.total, os.totalmem())
  assert.ok(!Number.isNaN(Date.parse(caps.detectedAt)))
  assert.ok(caps.recommendations.threads >= 1 && caps.recommendations.threads <= caps.cpu.physicalCores)
  assert.ok(caps.recommendations.maxModelBytes > 0)
  assert.match(caps.recommendations.maxModelSize, /^(<0\.5B|\d+M|[\d.]+B)$/)
  assert.equal(typeof caps.gpu.available, 'boolean')
  assert.equal(caps.gpu.available, caps.gpu.devices.length > 0)
})

test('CPU features match /proc/cpuinfo', { skip: !isLinux && 'reads /proc/cpuinfo (Linux only)' }, async () => {
  const caps = await systemInfo.detect()
  const cpuinfo = fs.readFileSync('/proc/cpuinfo', 'utf8')
  if (process.arch === 'x64') {
    const flags = cpuinfo
      .split('\n')
      .find((l) => l.startsWith('flags'))
      .split(':')[1]
      .trim()
      .split(/\s+/)
    for (const feature of ['avx', 'avx2', 'fma', 'f16c', 'avx512f']) {
      assert.equal(caps.cpu.features.includes(feature), flags.includes(feature), feature)
    }
  }
})

test('memory matches /proc/meminfo within 2%', { skip: !isLinux && 'reads /proc/meminfo (Linux only)' }, () => {
  const mem = systemInfo.getMemoryInfo()
  const total = meminfoBytes('MemTotal:')
  const available = meminfoBytes('MemAvailable:')
  assert.equal(mem.total, total)
  assert.ok(Math.abs(mem.available - available) / total <= 0.02, `${mem.available} vs ${available}`)
  assert.equal(mem.used, mem.total - mem.available)
})

test('no NVIDIA driver means no NVIDIA GPU, without error', async (t) => {
  const gpu = await systemInfo.getGPUInfo()
  const hasDriver = fs.existsSync('/proc/driver/nvidia/version')
  if (hasDriver) t.diagnostic('NVIDIA driver present: checking its devices instead')
  assert.equal(
    gpu.devices.some((d) => d.vendor === 'nvidia'),
    hasDriver,
  )
  assert.equal(gpu.cuda, hasDriver)
  for (const d of gpu.devices) assert.equal(typeof d.name, 'string')
})

test("Vulkan devices as the backends choose them: Mesa's lavapipe (a CPU) only when GGML_VK_VISIBLE_DEVICES names it", async (t) => {
  const required = Boolean(process.env.GENAI_ELECTRON_REQUIRE_VULKAN)
  const script = `require('.').systemInfo.getGPUInfo().then((gpu) => console.log(JSON.stringify(gpu)))`
  const run = async (env) => {
    const { code, stdout, stderr } = await runNode(script, { env })
    assert.equal(code, 0, stderr)
    return JSON.parse(stdout)
  }
  const listed = await run({ GGML_VK_VISIBLE_DEVICES: '0' })
  const lavapipe = listed.devices.find((d) => d.deviceType === 'cpu')
  if (!lavapipe && !required) return t.skip("no Vulkan loader with Mesa's lavapipe (npm test installs it)")
  assert.ok(lavapipe, JSON.stringify(listed))
  assert.match(lavapipe.name, /llvmpipe/)
  assert.equal(lavapipe.vendor, 'other')
  assert.equal(lavapipe.vulkanIndex, 0)
  assert.ok(lavapipe.vram > 0 && lavapipe.vramAvailable === lavapipe.vram, JSON.stringify(lavapipe))
  assert.equal(listed.vulkan, true)
  const unlisted = await run({ GGML_VK_VISIBLE_DEVICES: undefined })
  assert.ok(!unlisted.devices.some((d) => d.deviceType === 'cpu'), 'a CPU is never counted as a GPU by default')

  // The device's memory sizes the GPU layers: all of the small chat model, part of a model
  // larger than the device.
  const large = { ...SMOLLM2, size: 2 * lavapipe.vram, ggufMetadata: { ...SMOLLM2.ggufMetadata, block_count: 40 } }
  const configs = `const { systemInfo } = require('.')
    Promise.all([${JSON.stringify(SMOLLM2)}, ${JSON.stringify(large)}].map((m) => systemInfo.getOptimalConfig(m)))
      .then((c) => console.log(JSON.stringify(c)))`
  const { code, stdout, stderr } = await runNode(configs, { env: { GGML_VK_VISIBLE_DEVICES: '0' } })
  assert.equal(code, 0, stderr)
  const [small, big] = JSON.parse(stdout)
  // llama.cpp's count: every block and the output layer.
  assert.equal(small.gpuLayers, SMOLLM2.ggufMetadata.block_count + 1)
  assert.ok(big.gpuLayers > 0 && big.gpuLayers < 40, JSON.stringify(big))
  const [cpuOnly] = JSON.parse((await runNode(configs, { env: { GGML_VK_VISIBLE_DEVICES: undefined } })).stdout)
  assert.equal(cpuOnly.gpuLayers, 0)
})

test('detect() is cached until forced or cleared', async () => {
  const first = await systemInfo.detect()
  const second = await systemInfo.detect()
  assert.equal(second.detectedAt, first.detectedAt)
  // Time must pass on purpose: detectedAt has millisecond resolution, so a new detection made
  // within the same millisecond would look cached.
  await new Promise((r) => setTimeout(r, 5))
  const forced = await systemInfo.detect(true)
  assert.notEqual(forced.detectedAt, first.detectedAt)
  systemInfo.clearCache()
  // As above: a later millisecond, so a fresh detection has a different detectedAt.
  await new Promise((r) => setTimeout(r, 5))
  assert.notEqual((await systemInfo.detect()).detectedAt, forced.detectedAt)
})

test('canRunModel gives a verdict with its estimate', async () => {
  const small = await systemInfo.canRunModel(SMOLLM2, { contextSize: 2048 })
  assert.equal(small.possible, true)
  assert.equal(small.reason, undefined)
  assert.equal(small.estimate.contextSize, 2048)
  // 30 layers × 2 × 3 KV heads × 64 dims × 2 bytes × 2048 tokens
  assert.equal(small.estimate.kvCache, 30 * 2 * 3 * 64 * 2 * 2048)
  const huge = await systemInfo.canRunModel({ size: 2 * os.totalmem() })
  assert.equal(huge.possible, false)
  assert.match(huge.reason, /RAM/)
  assert.ok(huge.suggestion.length > 0)
  const ever = await systemInfo.canRunModel({ size: 2 * os.totalmem() }, { checkTotalMemory: true })
  assert.match(ever.reason, /total/)
})

test('getOptimalConfig returns a startable config', async () => {
  const caps = await systemInfo.detect()
  const config = await systemInfo.getOptimalConfig(SMOLLM2)
  assert.deepEqual(Object.keys(config).sort(), ['contextSize', 'gpuLayers', 'parallelRequests', 'threads'])
  assert.equal(config.threads, caps.recommendations.threads)
  assert.ok(config.contextSize >= 2048 && config.contextSize <= 8192)
  if (!caps.gpu.available) assert.equal(config.gpuLayers, 0)
  const hinted = await systemInfo.getOptimalConfig(SMOLLM2, { contextSize: 1024, gpuLayers: 0 })
  assert.equal(hinted.contextSize, 1024)
})

test('bad model info is a ValidationError with a suggestion', async () => {
  for (const bad of [{ size: -1 }, { size: 'big' }, {}, { size: 1e9, ggufMetadata: { block_count: 'x' } }]) {
    await assert.rejects(systemInfo.canRunModel(bad), (err) => {
      assert.ok(err instanceof ValidationError)
      assert.ok(err instanceof GenaiElectronError)
      assert.equal(err.code, 'INVALID_ARGUMENT')
      assert.ok(err.details.suggestion, 'has a suggestion')
      return true
    })
  }
  await assert.rejects(systemInfo.getOptimalConfig({ size: 1e9 }, { cacheTypeK: 'q9' }), ValidationError)
})

test('detect() does not block the event loop', async (t) => {
  // Native work runs on tokio's pool; the loop only converts results.
  await assertLoopFree(
    async () => {
      for (let i = 0; i < 20; i++) {
        await Promise.all([systemInfo.detect(true), systemInfo.getGPUInfo()])
      }
    },
    { t, what: '20 forced detect() and getGPUInfo() calls' },
  )
})
