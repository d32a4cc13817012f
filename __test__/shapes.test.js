'use strict'

// Model shapes whose memory llama.cpp lays out differently from a plain transformer, run in the
// real llama-server: sliding-window attention (a tiny Gemma 3) and mixture of experts (a tiny
// Mixtral-shaped llama), and the models it loads beside the chat model (a vision projector, a
// draft model), made by scripts/make_shaped_models.py. The estimates are checked against the
// buffers llama-server reports it allocated.
// Mesa's lavapipe serves the one check that needs a device (experts kept on the CPU); the
// library and the backends use it only where GGML_VK_VISIBLE_DEVICES names it.
process.env.GGML_VK_VISIBLE_DEVICES = '0'

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { backends, deviceBuffers, png, serveFiles } = require('./helpers')
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

async function promptTokens(port, content) {
  const response = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ messages: [{ role: 'user', content }], max_tokens: 2 }),
  })
  const body = await response.json()
  assert.equal(response.status, 200, JSON.stringify(body))
  return body.usage.prompt_tokens
}

test('a vision projector in extraArgs: an image in a chat is encoded, and the estimates count the projector', async (t) => {
  if (!shaped(t)) return
  const model = models.chat
  const extraArgs = ['--mmproj', real.shapedModels.mmproj]
  const options = { contextSize: 2048, gpuLayers: 0 }
  const server = new LlamaServerManager()
  server.clearLogs()
  const { port } = await server.start({ modelId: 'chat', port: 'auto', threads: 1, ...options, extraArgs })
  try {
    const text = [{ type: 'text', text: 'What is this?' }]
    const image = { type: 'image_url', image_url: { url: `data:image/png;base64,${png(64).toString('base64')}` } }
    const withImage = await promptTokens(port, [...text, image])
    const without = await promptTokens(port, text)
    // One 64-pixel tile of 16 patches, shuffled 2 × 2 into 4 tokens, with the markers around it.
    assert.ok(withImage >= without + 4, `${withImage} prompt tokens with the image, ${without} without`)
    const lines = await server.getLogs(4000)
    assert.ok(
      lines.some((l) => /encoding mtmd batch|image decoded/.test(l)),
      'the server encoded the image',
    )
    // The projector's weights and its compute buffer, on the CPU here, beside the model's.
    const clipCompute = lines.flatMap(
      (l) => /reserve_compute_meta:\s+CPU compute buffer size =\s+([\d.]+) MiB/.exec(l)?.[1] ?? [],
    )
    assert.equal(clipCompute.length, 1, 'clip reserved its compute buffer once')
    const weights = fs.statSync(real.shapedModels.mmproj).size
    for (const info of [{ ...model, path: undefined }, model]) {
      const plain = (await systemInfo.canRunModel(info, options)).estimate
      const counted = (await systemInfo.canRunModel(info, { ...options, extraArgs })).estimate
      const added = counted.ram - plain.ram
      const measured = weights + Number(clipCompute[0]) * MIB
      assert.ok(
        added >= measured && added <= measured + 2 * MIB,
        `${plain.source}: ${added} added, ${measured} measured`,
      )
      assert.equal(counted.vram, 0)
    }
  } finally {
    await server.stop()
  }
})

test('a draft model in extraArgs: speculative decoding runs, and the estimates count both models', async (t) => {
  if (!shaped(t)) return
  const model = models.chat
  // llama.cpp drafts with a draft model only where a speculative type says so.
  const extraArgs = ['--model-draft', real.shapedModels.draft, '--spec-type', 'draft-simple']
  const options = { contextSize: 2048, gpuLayers: 0 }
  const server = new LlamaServerManager()
  server.clearLogs()
  const { port } = await server.start({ modelId: 'chat', port: 'auto', threads: 1, ...options, extraArgs })
  try {
    await chat(port, 16)
    const lines = await server.getLogs(4000)
    assert.ok(
      lines.some((l) => /draft acceptance/.test(l)),
      'the draft model drafted',
    )
    // Each model's buffers, in the order loaded: the main model's, then the draft's.
    const mib = (re) => lines.flatMap((l) => re.exec(l)?.[1] ?? []).map((x) => Number(x) * MIB)
    const weights = mib(/CPU_Mapped model buffer size =\s+([\d.]+) MiB/)
    const kv = mib(/CPU KV buffer size =\s+([\d.]+) MiB/)
    assert.equal(kv.length, 2, 'one KV cache a model')
    const draft = { weights: weights[1], kv: kv[1] }
    for (const info of [{ ...model, path: undefined }, model]) {
      const plain = (await systemInfo.canRunModel(info, options)).estimate
      const counted = (await systemInfo.canRunModel(info, { ...options, extraArgs })).estimate
      const added = { weights: counted.weights - plain.weights, kv: counted.kvCache - plain.kvCache }
      const close = (a, b) => a >= b && a <= b * 1.1 + MIB
      assert.ok(
        close(added.weights, draft.weights),
        `${plain.source}: weights ${added.weights} against ${draft.weights}`,
      )
      assert.ok(close(added.kv, draft.kv), `${plain.source}: KV ${added.kv} against ${draft.kv}`)
      assert.ok(counted.ram - plain.ram >= draft.weights + draft.kv)
    }
  } finally {
    await server.stop()
  }
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
