'use strict'

// Model shapes whose memory llama.cpp lays out differently from a plain transformer, run in the
// real llama-server: sliding-window attention (a tiny Gemma 3) and mixture of experts (a tiny
// Mixtral-shaped llama), made by scripts/make_shaped_models.py. The estimates are checked against
// the buffers llama-server reports it allocated. (The models loaded beside the chat model, a
// vision projector and a draft, are tested in model-tasks.test.js.)
// Mesa's lavapipe serves the one check that needs a device (experts kept on the CPU); the
// library and the backends use it only where GGML_VK_VISIBLE_DEVICES names it.
process.env.GGML_VK_VISIBLE_DEVICES = '0'

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { backends, deviceBuffers, serveFiles } = require('./helpers')
const { configure, systemInfo, ModelManager, LlamaServerManager } = require('..')

const { paths: real, skip: noBackends } = backends()
const MIB = 2 ** 20
const models = {}

/** Skips `t` without the shaped models (failing where npm test requires the real backends). */
function shaped(t) {
  if (noBackends) return t.skip(noBackends) ?? false
  assert.ok(real.shapedModels, 'npm run backends makes the shaped models (shapedModels in its JSON)')
  return true
}

test.before(async () => {
  if (noBackends || !real.shapedModels) return
  configure({ dataDir: fs.mkdtempSync(path.join(os.tmpdir(), 'genai-electron-shapes-')) })
  process.env.GENAI_ELECTRON_LLAMA_SERVER = real.llamaServer
  const manager = new ModelManager()
  const files = { '/swa.gguf': real.shapedModels.swa, '/moe.gguf': real.shapedModels.moe, '/chat.gguf': real.chatModel }
  await serveFiles(files, async (base) => {
    for (const name of ['swa', 'moe', 'chat']) {
      models[name] = await manager.downloadModel({ source: 'url', url: `${base}/${name}.gguf`, name, type: 'llm' })
    }
  })
})

async function chat(port, maxTokens = 4) {
  const response = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ messages: [{ role: 'user', content: 'Hello' }], max_tokens: maxTokens }),
  })
  assert.equal(response.status, 200)
}

/** The KV cache llama-server allocated on the CPU, and the cells of each of its caches. */
async function kvOf(server) {
  const lines = await server.getLogs(4000)
  const cells = lines.flatMap((l) => /creating\s+(non-SWA|SWA) KV cache, size = (\d+) cells/.exec(l)?.slice(1) ?? [])
  return { kv: deviceBuffers(lines, 'CPU').kv, cells }
}

test("sliding-window attention: the arithmetic and llama.cpp's projection size the KV cache llama-server allocates, with and without swaFull", async (t) => {
  if (!shaped(t)) return
  const model = models.swa
  assert.equal(model.ggufMetadata.architecture, 'gemma3')
  assert.equal(model.ggufMetadata.attention_sliding_window, 128)
  const server = new LlamaServerManager()
  for (const swaFull of [false, true]) {
    server.clearLogs()
    const { port } = await server.start({
      modelId: 'swa',
      port: 'auto',
      threads: 1,
      contextSize: 8192,
      gpuLayers: 0,
      swaFull,
    })
    try {
      await chat(port)
      const { kv, cells } = await kvOf(server)
      const options = { contextSize: 8192, gpuLayers: 0, swaFull }
      const arithmetic = (await systemInfo.canRunModel({ ...model, path: undefined }, options)).estimate
      const projected = (await systemInfo.canRunModel(model, options)).estimate
      assert.equal(arithmetic.source, 'estimated')
      assert.equal(projected.source, 'projected')
      if (swaFull) {
        // Every layer holds the whole context: 6 × 8192 cells of 1 KiB.
        assert.deepEqual(cells, ['non-SWA', '8192', 'SWA', '8192'])
        assert.equal(kv, 48 * MIB)
      } else {
        // One layer of six attends to all 8192 tokens; five keep 128 + a micro-batch of 512,
        // rounded up to 768 cells.
        assert.deepEqual(cells, ['non-SWA', '8192', 'SWA', '768'])
        assert.equal(kv, 11.75 * MIB)
      }
      assert.equal(arithmetic.kvCache, kv, 'the arithmetic knows the sliding layers')
      assert.ok(projected.kvCache >= kv && projected.kvCache <= kv + 2 * MIB, `${projected.kvCache} against ${kv}`)
    } finally {
      await server.stop()
    }
  }
})

test("mixture of experts: it runs, and cpuMoe keeps the experts in RAM, as llama.cpp's projection counts them", async (t) => {
  if (!shaped(t)) return
  const model = models.moe
  assert.equal(model.ggufMetadata.expert_count, 8)
  const gpu = await systemInfo.getGPUInfo()
  if (!gpu.devices.some((d) => d.vulkanIndex === 0)) {
    assert.ok(!process.env.GENAI_ELECTRON_REQUIRE_VULKAN, 'lavapipe is installed by npm test')
    return t.skip("no Vulkan loader with Mesa's lavapipe (npm test installs it)")
  }
  const everyLayer = model.ggufMetadata.block_count + 1
  const server = new LlamaServerManager()
  const placed = {}
  for (const cpuMoe of [false, true]) {
    server.clearLogs()
    const { port } = await server.start({
      modelId: 'moe',
      port: 'auto',
      threads: 1,
      contextSize: 2048,
      gpuLayers: everyLayer,
      cpuMoe,
    })
    try {
      await chat(port)
      const lines = await server.getLogs(4000)
      const onDevice = deviceBuffers(lines).model
      const options = { contextSize: 2048, gpuLayers: everyLayer, cpuMoe }
      const projected = (await systemInfo.canRunModel(model, options)).estimate
      assert.equal(projected.source, 'projected')
      placed[cpuMoe] = { onDevice, projected }
    } finally {
      await server.stop()
    }
  }
  // The experts of both layers: 2 × 3 × 8 × 128 × 64 floats.
  const experts = 2 * 3 * 8 * 128 * 64 * 4
  const moved = placed.false.onDevice - placed.true.onDevice
  assert.ok(Math.abs(moved - experts) < 0.05 * MIB, `${moved} bytes left the device, the experts are ${experts}`)
  const projectedMove = placed.false.projected.vram - placed.true.projected.vram
  assert.ok(Math.abs(projectedMove - experts) <= 2 * MIB, `projected: ${projectedMove} against ${experts}`)
  assert.ok(placed.true.projected.ram > placed.false.projected.ram, 'and into RAM')
})

test('getOptimalConfig asks llama.cpp, and a start given no context runs the one it returns', async (t) => {
  if (!shaped(t)) return
  const hints = { gpuLayers: 0, maximumContextSize: 4096 }
  const optimal = await systemInfo.getOptimalConfig(models.chat, hints)
  assert.deepEqual([optimal.contextSize, optimal.gpuLayers], [4096, 0])
  const server = new LlamaServerManager()
  await server.start({ modelId: 'chat', port: 'auto', threads: 1, ...hints })
  try {
    const config = server.getConfig()
    assert.deepEqual([config.contextSize, config.gpuLayers], [optimal.contextSize, optimal.gpuLayers])
    assert.equal(server.getInfo().runningWith.contextSize, optimal.contextSize)
  } finally {
    await server.stop()
  }
})
