'use strict'

// The GPU path on a real Vulkan driver: Mesa's lavapipe, with the backends that `npm run backends`
// builds for Vulkan. lavapipe is a CPU device, which llama.cpp, stable-diffusion.cpp and the
// library's detection use only when GGML_VK_VISIBLE_DEVICES names it: this file's process (node
// --test runs each file in its own) names it, and so does every server it starts.
process.env.GGML_VK_VISIBLE_DEVICES = '0'

const test = require('node:test')
const assert = require('node:assert/strict')
const { backends, deviceBuffers, serveFiles, downloadTinyImageSet, withTinyModel } = require('./helpers')
const { systemInfo, ModelManager, LlamaServerManager, DiffusionServerManager, ResourceOrchestrator } = require('..')

const { paths: real, skip: noBackends } = backends()
const MIB = 1 << 20
const IMAGE = { prompt: 'a red cube', width: 64, height: 64, steps: 2, cfgScale: 1, seed: 7 }
// The pinned stable-diffusion.cpp's Vulkan backend corrupts lavapipe's memory while the tiny
// set's text encoder runs there (the process aborts: "malloc(): unsorted double linked list
// corrupted"; 9 runs of 9), and often while its TAESD does (4 of 9); its diffusion model ran
// there every time (about 20 runs). So the images made on lavapipe keep those two on the CPU,
// with sd's own switches.
const ON_LAVAPIPE = { clipOnCpu: true, vaeOnCpu: true }

/** lavapipe as detection sees it, or null after skipping `t` (failing where npm test requires it). */
async function lavapipe(t) {
  const required = Boolean(process.env.GENAI_ELECTRON_REQUIRE_VULKAN)
  if (noBackends) return t.skip(noBackends) ?? null
  const builds = real.builds ?? {}
  if (builds.llama !== 'vulkan' || builds.diffusion !== 'vulkan') {
    const why = `the backends were built for the CPU (${JSON.stringify(builds)}): npm run backends builds them for Vulkan where glslc and the Vulkan headers can be had`
    assert.ok(!required, why)
    return t.skip(why) ?? null
  }
  const gpu = await systemInfo.getGPUInfo()
  const device = gpu.devices.find((d) => d.deviceType === 'cpu' && d.vulkanIndex === 0)
  if (!device) {
    assert.ok(!required, `no lavapipe among ${JSON.stringify(gpu.devices)}`)
    return t.skip("no Vulkan loader with Mesa's lavapipe (npm test installs it)") ?? null
  }
  return device
}

let chatModel
/** The real chat model, registered once in this file's data folder. */
async function registerChatModel() {
  if (chatModel) return chatModel
  process.env.GENAI_ELECTRON_LLAMA_SERVER = real.llamaServer
  chatModel = await serveFiles({ '/chat.gguf': real.chatModel }, (base) =>
    new ModelManager().downloadModel({ source: 'url', url: `${base}/chat.gguf`, name: 'chat', type: 'llm' }),
  )
  return chatModel
}

async function askParis(port) {
  const response = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      messages: [{ role: 'user', content: 'What is the capital of France?' }],
      temperature: 0,
      max_tokens: 8,
    }),
  })
  assert.equal(response.status, 200)
  return (await response.json()).choices[0].message.content
}

test.before(async () => {
  if (noBackends) return
  // The tiny models (and the chat model, below) in one fresh data folder.
  await withTinyModel(real)
  process.env.GENAI_ELECTRON_SD_CLI = real.sdCli
  process.env.GENAI_ELECTRON_SD_SERVER = real.sdServer
  await downloadTinyImageSet(new ModelManager(), real)
})

test('the chat model with every layer on lavapipe: its device buffers against our VRAM estimate; it answers "Paris"', async (t) => {
  if (!(await lavapipe(t))) return
  const model = await registerChatModel()
  const server = new LlamaServerManager()
  const { port } = await server.start({
    modelId: model.id,
    port: 'auto',
    threads: 1,
    contextSize: 2048,
  })
  try {
    const { gpuLayers } = server.getConfig()
    // getOptimalConfig put every layer on the device (it has 2 GiB): each block and the output.
    assert.equal(gpuLayers, model.ggufMetadata.block_count + 1)
    // And llama-server says it runs so, with the context and slots asked for.
    const layers = model.ggufMetadata.block_count + 1
    const runningWith = { gpuLayers: layers, layers, contextSize: 2048, parallelRequests: 1 }
    assert.deepEqual(server.getInfo().runningWith, runningWith)
    const found = deviceBuffers(await server.getLogs(2000))
    const onDevice = found.model + found.kv + found.compute
    const sized = async (info) => (await systemInfo.canRunModel(info, { contextSize: 2048, gpuLayers })).estimate
    // Without the file's path canRunModel cannot ask llama.cpp, and the arithmetic answers.
    const estimate = await sized({ ...model, path: undefined })
    const projected = await sized(model)
    assert.equal(estimate.source, 'estimated')
    assert.equal(projected.source, 'projected')
    const row = (part, ours, theirs) =>
      `${part}: ours ${(ours / MIB).toFixed(1)} MiB, llama.cpp's ${(theirs / MIB).toFixed(1)} MiB`
    console.log(
      [
        row('weights', estimate.weights, found.model),
        row('KV cache', estimate.kvCache, found.kv),
        row('compute', estimate.compute, found.compute),
        row('VRAM in all', estimate.vram, onDevice),
        row('VRAM projected', projected.vram, onDevice),
      ].join('\n'),
    )
    assert.ok(found.model > 0 && found.kv > 0 && found.compute > 0, JSON.stringify(found))
    // What the running server holds on the device is what llama.cpp reported there (lavapipe is
    // not an NVIDIA GPU: NVML cannot tell).
    const usage = await server.getMemoryUsage()
    assert.ok(Math.abs(usage.vramBytes - onDevice) < 0.01 * MIB, `${usage.vramBytes} against ${onDevice}`)
    // The KV cache is the same arithmetic; the weights and compute buffers are never
    // under-estimated (the token embeddings stay in RAM, and our compute part is a fixed margin).
    assert.ok(Math.abs(estimate.kvCache - found.kv) < 0.01 * found.kv, row('KV cache', estimate.kvCache, found.kv))
    assert.ok(estimate.weights >= found.model && estimate.compute >= found.compute)
    assert.ok(estimate.vram >= onDevice)
    // llama.cpp's projection has the KV cache it then allocates (rounded up to the MiB), and
    // the token embeddings that stay in RAM, which the arithmetic misses; its compute part is
    // capped by ours (see docs/API.md), so it says no more than the arithmetic but its rounding.
    assert.ok(
      projected.kvCache >= found.kv && projected.kvCache <= found.kv + MIB,
      row('KV', projected.kvCache, found.kv),
    )
    assert.ok(projected.vram >= onDevice, row('projected', projected.vram, onDevice))
    assert.ok(projected.vram <= estimate.vram + 3 * MIB, row('projected', projected.vram, estimate.vram))
    // In RAM: only llama-server's own memory (24 MiB) and the driver's (lavapipe's is 118 MiB;
    // the estimate says 128).
    assert.equal(estimate.ram, (24 + 128) * MIB)
    assert.ok(projected.ram >= 28 * MIB, `token embeddings in RAM: ${projected.ram}`)
    assert.match(await askParis(port), /Paris/)
  } finally {
    await server.stop()
  }
})

test("a start that llama.cpp projects beyond the device's memory is refused before llama-server is spawned, naming the device and the figures", async (t) => {
  if (!(await lavapipe(t))) return
  const model = await registerChatModel()
  const server = new LlamaServerManager()
  const events = []
  server.on('starting', () => events.push('starting'))
  // 45 MiB of KV cache per 2048 tokens: 64 Ki tokens need 1440 MiB beside the weights, more than
  // lavapipe's 2 GiB less the 512 MiB kept free.
  const everyLayer = model.ggufMetadata.block_count + 1
  await assert.rejects(
    server.start({ modelId: model.id, port: 'auto', threads: 1, contextSize: 65536, gpuLayers: everyLayer }),
    (err) => {
      assert.equal(err.code, 'INSUFFICIENT_RESOURCES', err.message)
      assert.match(err.message, /llama\.cpp projects Vulkan0 \d+ MiB \(model \d+ \+ context 14\d\d \+ compute \d+\)/)
      assert.ok(err.details.required.vram > 1440 * MIB, JSON.stringify(err.details))
      return true
    },
  )
  assert.equal(server.getInfo().pid, null)
  assert.deepEqual(events, [], 'nothing was started')
  // The same context with K in q8_0 (V stays f16) fits.
  const check = await systemInfo.canRunModel(model, {
    contextSize: 65536,
    gpuLayers: everyLayer,
    cacheTypeK: 'q8_0',
    cacheTypeV: 'f16',
  })
  assert.equal(check.estimate.source, 'projected')
  assert.equal(check.possible, true, JSON.stringify(check))
  assert.ok(check.estimate.kvCache < 1200 * MIB, JSON.stringify(check))
})

test('gpuLayers: 0 keeps llama-server off the device: no buffer of its there', async (t) => {
  if (!(await lavapipe(t))) return
  const server = new LlamaServerManager()
  await server.start({ modelId: 'tiny', port: 'auto', threads: 1, contextSize: 512, gpuLayers: 0 })
  try {
    const lines = await server.getLogs(2000)
    assert.deepEqual(deviceBuffers(lines), { model: 0, kv: 0, compute: 0 })
    assert.equal((await server.getMemoryUsage()).vramBytes, null)
    assert.ok(deviceBuffers(lines, 'CPU').kv > 0, 'the KV cache is in RAM')
    assert.ok(!lines.some((l) => /Vulkan0 \w+ buffer/.test(l)), lines.join('\n'))
  } finally {
    await server.stop()
  }
})

/** sd's own words on where each part's weights went, from its "total params memory size" line. */
function sdPlacement(lines) {
  const line = lines.find((l) => l.includes('total params memory size'))
  assert.ok(line, `no params line in:\n${lines.join('\n')}`)
  const part = (name) => new RegExp(`${name} [\\d.]+MB\\((V?RAM)\\)`).exec(line)?.[1]
  return { textEncoders: part('text_encoders'), diffusionModel: part('diffusion_model'), vae: part('vae') }
}

test("the diffusion server on lavapipe, and each of vramBudget's placements in effect in sd's own output", async (t) => {
  if (!(await lavapipe(t))) return
  const server = new DiffusionServerManager()
  const start = (config) => server.start({ modelId: 'tiny-image', port: 'auto', threads: 1, ...config })
  try {
    // Resident (sd-server loads at the first image), unbudgeted: the diffusion model on the
    // device (the text encoder and the VAE on the CPU: see ON_LAVAPIPE).
    await start({ backend: 'resident', ...ON_LAVAPIPE })
    const image = await server.generateImage(IMAGE)
    assert.equal(image.width, 64)
    assert.deepEqual(sdPlacement(await server.getLogs(2000)), {
      textEncoders: 'RAM',
      diffusionModel: 'VRAM',
      vae: 'RAM',
    })
    await server.stop()

    // gpuLayers: 0 hides the device from sd: every part in RAM.
    server.clearLogs()
    await start({ backend: 'one-shot', gpuLayers: 0 })
    await server.generateImage(IMAGE)
    assert.deepEqual(sdPlacement(await server.getLogs(2000)), {
      textEncoders: 'RAM',
      diffusionModel: 'RAM',
      vae: 'RAM',
    })
    await server.stop()

    // A budget smaller than the model and a 512×512 image: --max-vram and --offload-to-cpu (with
    // the switches above). sd says so as it loads, and as it makes the image (one-shot: sd-cli).
    // (A budget below what one segment of the graph needs, 1 MB here, nearly always aborts sd on
    // lavapipe.)
    server.clearLogs()
    await start({ backend: 'one-shot', vramBudget: 64, ...ON_LAVAPIPE })
    assert.deepEqual(server.getConfig().placement, [
      '--max-vram',
      '0.062',
      '--offload-to-cpu',
      '--clip-on-cpu',
      '--vae-on-cpu',
    ])
    await server.generateImage(IMAGE)
    const lines = await server.getLogs(2000)
    assert.deepEqual(sdPlacement(lines), { textEncoders: 'RAM', diffusionModel: 'VRAM', vae: 'RAM' })
    for (const said of [
      /CLIP: Using CPU backend/,
      /VAE Autoencoder: Using CPU backend/,
      /offload params .* to runtime backend \(Vulkan0\)/,
      /graph cut max_vram=/,
    ]) {
      assert.ok(
        lines.some((l) => said.test(l)),
        `${said} in:\n${lines.join('\n')}`,
      )
    }
  } finally {
    await server.stop()
  }
})

test('VRAM as the bottleneck: the LLM is offloaded for an image that does not fit beside it on the device, and a chat sent meanwhile is answered "Paris"; with room, nothing restarts', async (t) => {
  if (!(await lavapipe(t))) return
  const model = await registerChatModel()
  const llama = new LlamaServerManager()
  const diffusion = new DiffusionServerManager()
  const info = await llama.start({ modelId: model.id, port: 'auto', threads: 1, contextSize: 2048 })
  await diffusion.start({ modelId: 'tiny-image', backend: 'one-shot', port: 'auto', threads: 1, ...ON_LAVAPIPE })
  try {
    // Room for either on the device but not both; RAM is no limit.
    const roomy = new ResourceOrchestrator(undefined, llama, diffusion, undefined, { headroom: 0 })
    const { llm, diffusion: image } = await roomy.estimate(IMAGE)
    assert.ok(llm.vram > 0 && image.vram > 0, JSON.stringify({ llm, image }))
    const budget = Math.max(llm.vram, image.vram) + MIB
    assert.ok(budget < llm.vram + image.vram)
    const tight = new ResourceOrchestrator(undefined, llama, diffusion, undefined, {
      vramBudgetBytes: budget,
      ramBudgetBytes: 64 * 2 ** 30,
      headroom: 0,
    })
    const estimate = await tight.estimate(IMAGE)
    assert.equal(estimate.bottleneck, 'vram')
    assert.equal(estimate.needsOffload, true)
    let answer
    tight.once('offload', () => (answer = askParis(info.port)))
    const result = await tight.orchestrateImageGeneration(IMAGE)
    assert.equal(result.width, 64)
    assert.match(await answer, /Paris/)
    const after = llama.getInfo()
    assert.equal(after.status, 'running')
    assert.equal(after.port, info.port)
    assert.notEqual(after.pid, info.pid)
    assert.equal(llama.getConfig().gpuLayers, model.ggufMetadata.block_count + 1, 'reloaded onto the device')
    tight.dispose()

    // With enough VRAM for both, the image is made beside the LLM.
    assert.equal((await roomy.estimate(IMAGE)).needsOffload, false)
    let offloaded = false
    roomy.once('offload', () => (offloaded = true))
    await roomy.orchestrateImageGeneration(IMAGE)
    assert.equal(offloaded, false)
    assert.equal(llama.getInfo().pid, after.pid)
    roomy.dispose()
  } finally {
    await Promise.all([llama.stop(), diffusion.stop()])
  }
})
