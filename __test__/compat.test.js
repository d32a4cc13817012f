'use strict'

// genai-electron 0.26's names and forms, offered beside ours, against the real backends: the
// status and health getters, parsed logs, the `crashed` event's `code`, the active image's id,
// GPUInfo.type, and the orchestrator's manual offloadLLM()/reloadLLM() with a chat held meanwhile.

const test = require('node:test')
const assert = require('node:assert/strict')
const { backends, startTinyServers, waitFor, nextEvent } = require('./helpers')
const { ResourceOrchestrator, systemInfo } = require('..')

const { paths: real, skip } = backends()

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

function chat(port) {
  return fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ messages: [{ role: 'user', content: 'Hello' }], max_tokens: 4 }),
  })
}

test('GPUInfo.type is the vendor under 0.26’s name', async () => {
  const gpu = await systemInfo.getGPUInfo()
  assert.equal(gpu.type, gpu.vendor)
})

test('status getters, health, parsed logs, crashed.code, the active image and a manual offload', { skip }, async () => {
  const { llama, diffusion, info, stop } = await startTinyServers(real)
  try {
    assert.deepEqual(
      [
        llama.getStatus(),
        llama.getPid(),
        llama.isStopped(),
        llama.isStarting(),
        llama.isStopping(),
        llama.hasCrashed(),
      ],
      ['running', info.pid, false, false, false, false],
    )
    assert.equal(await llama.getHealthStatus(), 'ok')
    assert.equal(await diffusion.getHealthStatus(), 'ok')
    const logs = await llama.getStructuredLogs(20)
    assert.ok(logs.length > 0 && logs.every((e) => e.timestamp && e.level && typeof e.message === 'string'))

    // The image whose turn it is, by its id.
    assert.equal(diffusion.getActiveGenerationId(), undefined)
    const post = await fetch(`http://127.0.0.1:${diffusion.getPort()}/v1/images/generations`, {
      method: 'POST',
      headers: { Prefer: 'respond-async' },
      body: JSON.stringify({ prompt: 'a cube', width: 64, height: 64, steps: 30, cfgScale: 1 }),
    })
    const { id } = await post.json()
    while (diffusion.getActiveGenerationId() !== id) await sleep(10)
    await waitFor(diffusion, 'job', (e) => e?.id === id && e.status === 'complete', { what: 'the image' })
    assert.equal(diffusion.getActiveGenerationId(), undefined)

    // offloadLLM() holds chat at the gateway until reloadLLM(); images meanwhile need no offload.
    const orchestrator = new ResourceOrchestrator(undefined, llama, diffusion, undefined, {
      ramBudgetBytes: 1 << 20,
      headroom: 0,
    })
    await orchestrator.offloadLLM()
    assert.ok(orchestrator.getSavedState().config)
    assert.equal(orchestrator.getInfo().phase, 'offloaded')
    const held = chat(info.port)
    await nextEvent(llama, 'queued')
    const batch = await orchestrator.orchestrateBatchGeneration({
      prompt: 'a cube',
      width: 64,
      height: 64,
      steps: 1,
      cfgScale: 1,
      seed: 4,
      count: 2,
    })
    assert.deepEqual(
      batch.map((r) => [r.seed, r.width, r.image.subarray(1, 4).toString()]),
      [
        [4, 64, 'PNG'],
        [5, 64, 'PNG'],
      ],
    )
    assert.equal(orchestrator.getInfo().phase, 'offloaded', 'still out after the images')
    await orchestrator.reloadLLM()
    assert.equal((await held).status, 200, 'the held chat was answered after the reload')
    assert.equal(llama.getInfo().port, info.port)
    assert.equal(orchestrator.getSavedState(), undefined)

    // A crash: 0.26's `code` beside `exitCode`.
    const crashed = nextEvent(llama, 'crashed')
    process.kill(llama.getPid(), 'SIGKILL')
    const event = await crashed
    assert.equal(event.code, event.exitCode)
    assert.equal(llama.hasCrashed() || llama.isStarting() || llama.isRunning(), true)
  } finally {
    await stop()
  }
})

test('a GGUF already on disk and a genai-electron 0.26 data folder are used without a download', { skip }, async () => {
  const fs = require('node:fs')
  const os = require('node:os')
  const path = require('node:path')
  const { configure, ModelManager, LlamaServerManager, DiffusionServerManager, ValidationError } = require('..')
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'genai-electron-import-'))
  configure({ dataDir: path.join(root, 'data') })
  process.env.GENAI_ELECTRON_LLAMA_SERVER = real.llamaServer
  process.env.GENAI_ELECTRON_SD_CLI = real.sdCli
  const models = new ModelManager()

  // A GGUF the user has: imported, then served.
  const mine = path.join(root, 'Downloads', 'tiny.gguf')
  fs.mkdirSync(path.dirname(mine))
  fs.copyFileSync(real.llmModel, mine)
  const imported = await models.importModel({ path: mine, type: 'llm', name: 'My Tiny' })
  assert.equal(imported.source.type, 'file')
  assert.equal(fs.statSync(imported.path).ino, fs.statSync(mine).ino, 'hard-linked, no copy')
  fs.rmSync(mine)
  assert.equal((await models.verifyModelFiles('my-tiny')).valid, true, 'whole without its source')
  await assert.rejects(models.importModel({ path: mine, type: 'llm', name: 'again' }), ValidationError)
  const llama = new LlamaServerManager()
  const { port } = await llama.start({ modelId: 'my-tiny', port: 'auto', threads: 1, contextSize: 256 })
  try {
    const answer = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
      method: 'POST',
      body: JSON.stringify({ messages: [{ role: 'user', content: 'Hi' }], max_tokens: 2 }),
    })
    assert.equal(answer.status, 200)
  } finally {
    await llama.stop()
  }

  // A 0.26 data folder: its records beside its files.
  const legacy = path.join(root, 'legacy', 'models', 'diffusion')
  fs.mkdirSync(legacy, { recursive: true })
  for (const [name, file] of [
    ['diffusion.gguf', real.diffusionModel],
    ['llm.gguf', real.diffusionComponents.llm],
    ['taesd.gguf', real.diffusionComponents.taesd],
  ])
    fs.copyFileSync(file, path.join(legacy, name))
  const at = (name) => ({ path: path.join(legacy, name), size: fs.statSync(path.join(legacy, name)).size })
  fs.writeFileSync(
    path.join(legacy, 'tiny-set.json'),
    JSON.stringify({
      id: 'tiny-set',
      name: 'Tiny Set',
      type: 'diffusion',
      size: 1,
      path: path.join(legacy, 'diffusion.gguf'),
      downloadedAt: '2026-01-01T00:00:00.000Z',
      source: { type: 'url', url: 'https://example.com/diffusion.gguf' },
      components: { diffusion_model: at('diffusion.gguf'), llm: at('llm.gguf'), taesd: at('taesd.gguf') },
    }),
  )
  const adoption = await models.adoptModels(path.join(root, 'legacy'))
  assert.deepEqual(
    adoption.adopted.map((m) => [m.id, m.source.url, Object.keys(m.components).sort()]),
    [['tiny-set', 'https://example.com/diffusion.gguf', ['llm', 'taesd']]],
  )
  assert.deepEqual(adoption.skipped, [])
  await assert.rejects(models.adoptModels(42), ValidationError)
  const diffusion = new DiffusionServerManager()
  await diffusion.start({ modelId: 'tiny-set', backend: 'one-shot', port: 'auto', threads: 1 })
  try {
    const image = await diffusion.generateImage({ prompt: 'a cube', width: 64, height: 64, steps: 1, cfgScale: 1 })
    assert.equal(image.width, 64)
  } finally {
    await diffusion.stop()
  }
})
