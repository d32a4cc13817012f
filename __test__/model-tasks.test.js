'use strict'

// What a llama-server serves beyond plain chat, against the real llama-server: a model
// downloaded with its multimodal projector and draft model (components), images in chats,
// speculative decoding, and embedding and rerank servers beside a chat server. The tiny
// projector, draft and reranker are made by scripts/make_shaped_models.py.

const test = require('node:test')
const assert = require('node:assert/strict')
const crypto = require('node:crypto')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { spawn } = require('node:child_process')
const OpenAI = require('openai').default
const { ROOT, alive, backends, downloadTinyImageSet, png, serveFiles, waitFor } = require('./helpers')
const {
  configure,
  systemInfo,
  DiffusionServerManager,
  LlamaServerManager,
  ModelManager,
  ResourceOrchestrator,
  ValidationError,
} = require('..')

const { paths: real, skip: noBackends } = backends()
const MIB = 2 ** 20
const models = {}
let dataDir

function shaped(t) {
  if (noBackends) return t.skip(noBackends) ?? false
  assert.ok(real.shapedModels?.reranker, 'npm run backends makes the shaped models, the reranker among them')
  return true
}

const sha256 = (file) => crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex')

test.before(async () => {
  if (noBackends || !real.shapedModels?.reranker) return
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'genai-electron-tasks-'))
  configure({ dataDir })
  process.env.GENAI_ELECTRON_LLAMA_SERVER = real.llamaServer
  const manager = new ModelManager()
  const files = {
    '/chat.gguf': real.chatModel,
    '/mmproj.gguf': real.shapedModels.mmproj,
    '/draft.gguf': real.shapedModels.draft,
    '/reranker.gguf': real.shapedModels.reranker,
  }
  await serveFiles(files, async (base) => {
    const url = (name) => ({ source: 'url', url: `${base}/${name}.gguf` })
    models.vlm = await manager.downloadModel({
      ...url('chat'),
      checksum: sha256(real.chatModel),
      name: 'vlm',
      type: 'llm',
      components: [
        { role: 'mmproj', ...url('mmproj'), checksum: `sha256:${sha256(real.shapedModels.mmproj)}` },
        { role: 'draft', ...url('draft') },
      ],
    })
    // The same URL: hard-linked from the first, not fetched again.
    models.chat = await manager.downloadModel({ ...url('chat'), name: 'chat', type: 'llm' })
    models.reranker = await manager.downloadModel({ ...url('reranker'), name: 'reranker', type: 'llm' })
  })
})

test('an llm model comes with its projector and draft, each checked, and says what it can do', async (t) => {
  if (!shaped(t)) return
  const { vlm, chat, reranker } = models
  assert.deepEqual(vlm.capabilities, ['chat', 'vision'])
  assert.deepEqual(chat.capabilities, ['chat'])
  assert.deepEqual(reranker.capabilities, ['rerank'])
  assert.deepEqual(Object.keys(vlm.components).sort(), ['draft', 'mmproj'])
  assert.equal(vlm.components.mmproj.checksum, sha256(real.shapedModels.mmproj))
  const sizes = [real.chatModel, real.shapedModels.mmproj, real.shapedModels.draft].map((f) => fs.statSync(f).size)
  assert.equal(
    vlm.size,
    sizes.reduce((a, b) => a + b),
  )
  assert.deepEqual((await new ModelManager().getModelInfo('vlm')).capabilities, ['chat', 'vision'])

  // A file in the wrong place, a checksum that differs, a role of another type: nothing is kept.
  const manager = new ModelManager()
  const files = { '/chat.gguf': real.chatModel, '/draft.gguf': real.shapedModels.draft }
  await serveFiles(files, async (base) => {
    const bad = [
      [[{ role: 'mmproj', source: 'url', url: `${base}/draft.gguf` }], /not a multimodal projector/],
      [[{ role: 'draft', source: 'url', url: `${base}/draft.gguf`, checksum: '0'.repeat(64) }], /checksum|sha256/i],
      [[{ role: 'vae', source: 'url', url: `${base}/draft.gguf` }], /"vae" is not for models of type 'llm'/],
    ]
    for (const [components, message] of bad) {
      const config = { source: 'url', url: `${base}/chat.gguf`, name: 'bad', type: 'llm', components }
      await assert.rejects(manager.downloadModel(config), (err) => {
        assert.match(err.message, message)
        assert.ok(err.code, 'a typed error')
        return true
      })
      assert.equal(fs.existsSync(path.join(dataDir, 'models', 'llm', 'bad')), false, 'no folder left')
      assert.ok(!(await manager.listModels('llm')).some((m) => m.id === 'bad'), 'nothing registered')
    }
  })
})

/** POSTs `body` as JSON to a gateway: the status and the JSON answered. */
async function post(port, route, body) {
  const response = await fetch(`http://127.0.0.1:${port}${route}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  })
  return { status: response.status, body: await response.json() }
}

const chatWith = (port, content, maxTokens = 2) =>
  post(port, '/v1/chat/completions', { messages: [{ role: 'user', content }], max_tokens: maxTokens })

const TEXT = [{ type: 'text', text: 'What is this?' }]
const IMAGE = { type: 'image_url', image_url: { url: `data:image/png;base64,${png(64).toString('base64')}` } }

/** `model` as canRunModel would see it with only the components named. */
function withComponents(model, roles) {
  const components = Object.fromEntries(roles.map((role) => [role, model.components[role]]))
  const size = fs.statSync(model.path).size + roles.reduce((sum, role) => sum + model.components[role].size, 0)
  return { ...model, components, size }
}

test('vision: the projector loads by default, an image in a chat is encoded through the gateway, and the estimates count it', async (t) => {
  if (!shaped(t)) return
  const model = models.vlm
  const options = { contextSize: 2048, gpuLayers: 0 }
  const server = new LlamaServerManager()
  server.clearLogs()
  const { port } = await server.start({ modelId: 'vlm', port: 'auto', threads: 1, ...options, draft: false })
  try {
    assert.deepEqual(server.getConfig().projector, { path: model.components.mmproj.path, offload: true })
    const withImage = await chatWith(port, [...TEXT, IMAGE])
    const without = await chatWith(port, TEXT)
    assert.equal(withImage.status, 200, JSON.stringify(withImage.body))
    // One 64-pixel tile of 16 patches, shuffled 2 × 2 into 4 tokens, with the markers around it.
    const [a, b] = [withImage.body.usage.prompt_tokens, without.body.usage.prompt_tokens]
    assert.ok(a >= b + 4, `${a} prompt tokens with the image, ${b} without`)
    assert.equal(withImage.body.model, 'vlm', 'named by its id')
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
    const measured = model.components.mmproj.size + Number(clipCompute[0]) * MIB
    const plain = withComponents(model, [])
    const counted = withComponents(model, ['mmproj'])
    for (const strip of [(m) => ({ ...m, path: undefined }), (m) => m]) {
      const without = (await systemInfo.canRunModel(strip(plain), options)).estimate
      const estimate = (await systemInfo.canRunModel(strip(counted), options)).estimate
      const added = estimate.ram - without.ram
      assert.ok(
        added >= measured && added <= measured + 2 * MIB,
        `${estimate.source}: ${added} added, ${measured} measured`,
      )
      assert.equal(estimate.vram, 0)
      // The same projector named in extraArgs counts the same.
      const extraArgs = ['--mmproj', model.components.mmproj.path]
      const named = (await systemInfo.canRunModel(strip(plain), { ...options, extraArgs })).estimate
      assert.equal(named.ram, estimate.ram)
      // Asked as a start would be asked: without it, or kept on the CPU (no GPU here: the same).
      const off = (await systemInfo.canRunModel(strip(counted), { ...options, projector: 'off' })).estimate
      assert.equal(off.ram, without.ram, "projector: 'off' counts none")
      const cpu = (await systemInfo.canRunModel(strip(counted), { ...options, projector: 'cpu' })).estimate
      assert.equal(cpu.ram, estimate.ram)
    }
  } finally {
    await server.stop()
  }
  // Turned off, an image is refused at the gateway: a 400 that says why (llama-server's own
  // answer would be a 500).
  const off = await server.start({
    modelId: 'vlm',
    port: 'auto',
    threads: 1,
    ...options,
    draft: false,
    projector: 'off',
  })
  try {
    assert.equal(server.getConfig().projector, null)
    const refused = await chatWith(off.port, [...TEXT, IMAGE])
    assert.equal(refused.status, 400)
    assert.equal(refused.body.error.reason ?? refused.body.error.code, 'INVALID_ARGUMENT')
    assert.match(refused.body.error.message, /reads no images or audio: it has no multimodal projector/)
    assert.equal((await chatWith(off.port, TEXT)).status, 200, 'a chat without one is answered')
  } finally {
    await server.stop()
  }
  await assert.rejects(server.start({ modelId: 'chat', port: 'auto', projector: 'cpu' }), (err) => {
    assert.ok(err instanceof ValidationError)
    assert.match(err.message, /has no multimodal projector/)
    return true
  })
})

test('speculative decoding: the draft component drafts by default, and the estimates count both models', async (t) => {
  if (!shaped(t)) return
  const model = models.vlm
  const options = { contextSize: 2048, gpuLayers: 0 }
  const server = new LlamaServerManager()
  server.clearLogs()
  const config = { modelId: 'vlm', port: 'auto', threads: 1, ...options, projector: 'off', draft: { maxTokens: 4 } }
  const { port } = await server.start(config)
  try {
    assert.equal(server.getConfig().draft.path, model.components.draft.path)
    assert.equal((await chatWith(port, 'Hello', 16)).status, 200)
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
    const plain = withComponents(model, [])
    const counted = withComponents(model, ['draft'])
    for (const strip of [(m) => ({ ...m, path: undefined }), (m) => m]) {
      const without = (await systemInfo.canRunModel(strip(plain), options)).estimate
      const estimate = (await systemInfo.canRunModel(strip(counted), options)).estimate
      const added = { weights: estimate.weights - without.weights, kv: estimate.kvCache - without.kvCache }
      const close = (a, b) => a >= b && a <= b * 1.1 + MIB
      assert.ok(
        close(added.weights, draft.weights),
        `${estimate.source}: weights ${added.weights} against ${draft.weights}`,
      )
      assert.ok(close(added.kv, draft.kv), `${estimate.source}: KV ${added.kv} against ${draft.kv}`)
      assert.ok(estimate.ram - without.ram >= draft.weights + draft.kv)
      const undrafted = (await systemInfo.canRunModel(strip(counted), { ...options, draft: false })).estimate
      assert.equal(undrafted.ram, without.ram, 'draft: false counts none')
    }
  } finally {
    await server.stop()
  }
  // Another installed model drafts when named; one that cannot generate text cannot.
  await assert.rejects(
    server.start({ modelId: 'chat', port: 'auto', draft: { modelId: 'reranker' } }),
    /cannot generate text, so it cannot draft/,
  )
  await assert.rejects(server.start({ modelId: 'chat', port: 'auto', draft: true }), /has no draft component/)
  // A model drafting for another is in use while that server runs: it cannot be deleted.
  await server.start({ modelId: 'vlm', port: 'auto', threads: 1, contextSize: 512, draft: { modelId: 'chat' } })
  try {
    assert.equal(server.getConfig().draft.modelId, 'chat')
    await assert.rejects(new ModelManager().deleteModel('chat'), { code: 'MODEL_IN_USE' })
  } finally {
    await server.stop()
  }
  assert.ok(await new ModelManager().getModelInfo('chat'), 'still installed')
})

test('embedding and rerank servers run beside a chat server, each on its own port and gateway', async (t) => {
  if (!shaped(t)) return
  const [chat, embedder, reranker] = [new LlamaServerManager(), new LlamaServerManager(), new LlamaServerManager()]
  const common = { port: 'auto', threads: 1, contextSize: 512, gpuLayers: 0 }
  // A model is refused a task it cannot serve, before anything is spawned.
  await assert.rejects(chat.start({ ...common, modelId: 'chat', mode: 'rerank' }), /cannot rerank/)
  await assert.rejects(chat.start({ ...common, modelId: 'reranker' }), /cannot generate text.*mode: 'rerank'/)
  await assert.rejects(chat.start({ ...common, modelId: 'chat', pooling: 'mean' }), /pooling is for embedding servers/)
  const ports = await Promise.all([
    chat.start({ ...common, modelId: 'chat' }),
    embedder.start({ ...common, modelId: 'chat', mode: 'embedding' }),
    reranker.start({ ...common, modelId: 'reranker', mode: 'rerank' }),
  ]).then((infos) => infos.map((i) => i.port))
  try {
    assert.equal(new Set(ports).size, 3)
    assert.equal(embedder.getConfig().pooling, 'mean', "the chat model's tokens are pooled by their mean")
    // The openai client against the embedding server's gateway.
    const client = new OpenAI({ baseURL: `http://127.0.0.1:${ports[1]}/v1`, apiKey: 'unused' })
    const embedded = await client.embeddings.create({ model: 'chat', input: ['Paris', 'a red cube'] })
    assert.equal(embedded.data.length, 2)
    assert.equal(embedded.data[0].embedding.length, models.chat.ggufMetadata.embedding_length)
    assert.notDeepEqual(embedded.data[0].embedding, embedded.data[1].embedding)
    assert.equal(embedded.model, 'chat')

    const documents = ['Paris is the capital of France.', 'A cube has six faces.', 'Bread is baked.']
    const { status, body: ranked } = await post(ports[2], '/v1/rerank', {
      model: 'reranker',
      query: 'capital of France',
      documents,
    })
    assert.equal(status, 200, JSON.stringify(ranked))
    assert.deepEqual(ranked.results.map((r) => r.index).sort(), [0, 1, 2])
    assert.ok(ranked.results.every((r) => Number.isFinite(r.relevance_score)))

    // The chat server still chats; the others answer only their own routes.
    assert.equal((await chatWith(ports[0], 'Hello')).status, 200)
    const misrouted = await chatWith(ports[1], 'Hello')
    assert.equal(misrouted.status, 400)
    assert.match(misrouted.body.error.message, /serves embeddings \(mode: 'embedding'\)/)
    const embeddingAtReranker = await post(ports[2], '/v1/embeddings', { input: 'x' })
    assert.equal(embeddingAtReranker.status, 400)
    // Each keeps its own log.
    for (const name of ['llama-server.log', 'llama-server-embedding.log', 'llama-server-rerank.log']) {
      assert.ok(fs.statSync(path.join(dataDir, 'logs', name)).size > 0, name)
    }
  } finally {
    await Promise.all([chat.stop(), embedder.stop(), reranker.stop()])
  }
})

test('an orchestrated image offloads only the servers it needs room from; requests held at them are answered', async (t) => {
  if (!shaped(t)) return
  process.env.GENAI_ELECTRON_SD_CLI = real.sdCli
  await downloadTinyImageSet(new ModelManager(), real)
  const diffusion = new DiffusionServerManager()
  await diffusion.start({ modelId: 'tiny-image', backend: 'one-shot', port: 'auto', threads: 1 })
  const llamas = [new LlamaServerManager(), new LlamaServerManager(), new LlamaServerManager()]
  const common = { port: 'auto', threads: 1, contextSize: 512, gpuLayers: 0 }
  const image = { prompt: 'a red cube', width: 64, height: 64, steps: 2, cfgScale: 1, seed: 7 }
  const probe = new ResourceOrchestrator(undefined, llamas, diffusion)
  try {
    const started = await Promise.all([
      llamas[0].start({ ...common, modelId: 'chat' }),
      llamas[1].start({ ...common, modelId: 'chat', mode: 'embedding' }),
      // Any of the orchestrator's servers starts in its turn; one it was not given is refused.
      probe.startLlamaServer({ ...common, modelId: 'reranker', mode: 'rerank' }, llamas[2]),
    ])
    await assert.rejects(
      probe.startLlamaServer({ ...common, modelId: 'chat' }, new LlamaServerManager()),
      ValidationError,
    )
    assert.equal(llamas[2].getStartConfig().mode, 'rerank', 'remembered by its manager')
    const ports = started.map((info) => info.port)
    assert.throws(() => new ResourceOrchestrator(undefined, []), ValidationError)
    assert.throws(() => new ResourceOrchestrator(undefined, [llamas[0], llamas[0]]), ValidationError)
    // What each server holds (measured) and what the image needs, with room for all.
    const sizes = await probe.estimate(image)
    probe.dispose()
    assert.deepEqual(
      sizes.servers.map((s) => [s.server, s.mode, s.port, s.usage.source, s.offload]),
      [
        [0, 'chat', ports[0], 'measured', false],
        [1, 'embedding', ports[1], 'measured', false],
        [2, 'rerank', ports[2], 'measured', false],
      ],
    )
    const [chatRam, embeddingRam, rerankRam] = sizes.servers.map((s) => s.usage.ram)
    assert.equal(sizes.llm.ram, chatRam + embeddingRam + rerankRam)
    assert.ok(embeddingRam > 2 * rerankRam, JSON.stringify(sizes.servers))
    const all = sizes.llm.ram + sizes.diffusion.ram

    // The chat server alone makes room (half of it is over the budget): only it goes.
    const served = await orchestrated(llamas, diffusion, all - chatRam / 2, image, ports, [0])
    assert.deepEqual(served.offloaded, [0])
    assert.deepEqual(served.queuedAt, [0], 'only the chat request waited')
    // The chat server and the reranker are not enough, the embedding server is: those two go.
    const over = chatRam + (rerankRam + embeddingRam) / 2
    const both = await orchestrated(llamas, diffusion, all - over, image, ports, [0, 1])
    assert.deepEqual(both.offloaded, [0, 1])
    assert.deepEqual(both.queuedAt, [0, 1], 'the chat and the embedding request waited')
    // Each came back on its port, the reranker never left.
    const after = llamas.map((l) => l.getInfo())
    assert.deepEqual(
      after.map((i) => [i.status, i.port]),
      ports.map((port) => ['running', port]),
    )
    assert.equal(after[2].pid, started[2].pid, 'the reranker was not restarted')
  } finally {
    probe.dispose()
    await Promise.all([...llamas.map((l) => l.stop()), diffusion.stop()])
  }
})

/**
 * An orchestrated image under `budget` bytes of RAM over the three servers: a chat, an embedding
 * and a rerank request are sent at each offload and as the image is made; all are answered.
 * Returns the servers offloaded and those at which a request waited.
 */
async function orchestrated(llamas, diffusion, budget, image, ports, expected) {
  const orchestrator = new ResourceOrchestrator(undefined, llamas, diffusion, undefined, {
    ramBudgetBytes: Math.round(budget),
    headroom: 0,
  })
  try {
    const estimate = await orchestrator.estimate(image)
    assert.deepEqual(
      estimate.servers.filter((s) => s.offload).map((s) => s.server),
      expected,
      JSON.stringify(estimate),
    )
    const offloaded = []
    const queuedAt = new Set()
    const requests = []
    orchestrator.on('queued', (e) => queuedAt.add(e.server))
    orchestrator.on('offload', (e) => {
      offloaded.push(e.server)
      assert.ok(e.resolved.modelId)
    })
    orchestrator.on('reload', (e) => assert.equal(e.port, ports[e.server]))
    // Once the servers are out (held at their gateways): one request of each kind.
    const out = waitFor(orchestrator, 'phase', (e) => e?.phase === 'offloading')
    const made = orchestrator.orchestrateImageGeneration(image)
    await out
    const statesWhileMade = orchestrator.getSavedStates()
    assert.equal(orchestrator.getSavedState().server, expected[0], 'the first out')
    requests.push(chatWith(ports[0], 'Hello'), embed(ports[1]), rerank(ports[2]))
    const result = await made
    assert.equal(result.images.length, 1)
    const [chat, embedding, ranking] = await Promise.all(requests)
    assert.equal(chat.status, 200, JSON.stringify(chat.body))
    assert.equal(embedding.status, 200, JSON.stringify(embedding.body))
    assert.equal(embedding.body.data[0].embedding.length, models.chat.ggufMetadata.embedding_length)
    assert.equal(ranking.status, 200, JSON.stringify(ranking.body))
    assert.deepEqual(
      statesWhileMade.map((s) => [s.server, s.config.modelId, s.wasRunning]),
      expected.map((server) => [server, server === 2 ? 'reranker' : 'chat', true]),
    )
    assert.deepEqual(orchestrator.getSavedStates(), [], 'all are back')
    return { offloaded, queuedAt: [...queuedAt].sort() }
  } finally {
    orchestrator.dispose()
  }
}

const embed = (port) => post(port, '/v1/embeddings', { model: 'chat', input: 'Paris' })
const rerank = (port) => post(port, '/v1/rerank', { query: 'capital', documents: ['Paris', 'bread'] })

test('killing the app with SIGKILL takes its chat, embedding and rerank servers with it', async (t) => {
  if (!shaped(t)) return
  const script = `
    const { LlamaServerManager, configure } = require(${JSON.stringify(ROOT)})
    configure({ dataDir: ${JSON.stringify(dataDir)} })
    const common = { port: 'auto', threads: 1, contextSize: 512, gpuLayers: 0 }
    const servers = [['chat', 'chat'], ['chat', 'embedding'], ['reranker', 'rerank']].map(([modelId, mode]) =>
      new LlamaServerManager().start({ ...common, modelId, mode }))
    Promise.all(servers).then((infos) => console.log(infos.map((i) => i.pid).join(' ')))`
  const env = { ...process.env, GENAI_ELECTRON_LLAMA_SERVER: real.llamaServer }
  const parent = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'], env })
  const line = await new Promise((resolve) => parent.stdout.once('data', (d) => resolve(String(d).trim())))
  const pids = line.split(' ').map(Number)
  assert.equal(pids.length, 3, line)
  assert.ok(pids.every(alive))
  parent.kill('SIGKILL')
  const deadline = Date.now() + 2000
  // Polled on purpose: the parent that could have told is dead, and the servers were its children.
  while (pids.some(alive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25))
  assert.deepEqual(pids.filter(alive), [], 'no server outlives the app by 2 s')
})
