'use strict'

// The main process's handlers under Node, on a fake ipcMain, against the real library, backends
// and tiny models: every reply crosses a structuredClone, as over Electron's IPC.

const test = require('node:test')
const assert = require('node:assert/strict')
const path = require('node:path')
const { PANEL, backends, panelEnv, serveFiles, modelFiles } = require('./helpers')

const { real, skip } = backends()
if (real) Object.assign(process.env, panelEnv(real))

const { registerHandlers, describeError } = require(path.join(PANEL, 'dist/node/main/handlers.js'))
const genai = require('genai-electron')

/** The handlers on a fake ipcMain; `invoke` answers as ipcRenderer.invoke would, `events` records. */
function fakeElectron() {
  const listeners = new Map()
  const events = []
  const ipcMain = { handle: (channel, fn) => listeners.set(channel, fn), removeHandler: (channel) => listeners.delete(channel) }
  const handlers = registerHandlers(ipcMain, (name, payload) => events.push({ name, ...structuredClone(payload) }))
  const invoke = async (channel, ...args) => {
    assert.ok(listeners.has(channel), `a handler for ${channel}`)
    return structuredClone(await listeners.get(channel)({}, ...args))
  }
  /** The value of a reply that must succeed. */
  const value = async (channel, ...args) => {
    const reply = await invoke(channel, ...args)
    assert.equal(reply.ok, true, `${channel}: ${JSON.stringify(reply.error)}`)
    return reply.value
  }
  return { listeners, events, invoke, value, handlers }
}

test('errors cross IPC with their code, message and suggestion', () => {
  const error = new genai.ValidationError('bad size', { suggestion: 'Use a multiple of 64' })
  assert.deepEqual(describeError(error), { name: 'ValidationError', code: 'INVALID_ARGUMENT', message: 'bad size', suggestion: 'Use a multiple of 64' })
  assert.deepEqual(describeError(new TypeError('x')), { name: 'TypeError', code: 'UNEXPECTED', message: 'x' })
  assert.deepEqual(describeError('text'), { name: 'Error', code: 'UNEXPECTED', message: 'text' })
})

test('every channel of the shared API has a handler, and dispose removes them', async () => {
  const { CHANNELS } = require(path.join(PANEL, 'dist/node/shared/api.js'))
  const { listeners, handlers } = fakeElectron()
  const channels = Object.values(CHANNELS).flatMap((area) => Object.values(area))
  assert.deepEqual([...listeners.keys()].sort(), [...channels].sort())
  await handlers.dispose()
  assert.equal(listeners.size, 0)
})

test('bad input is refused with the library\'s code, and nothing is registered', { skip }, async () => {
  const { invoke, value, handlers } = fakeElectron()
  try {
    const checksum = await invoke('models:download', { name: 'x', type: 'llm', source: 'url', url: 'http://127.0.0.1:9/x.gguf', checksum: 'md5:abc', downloadId: 'd1' })
    assert.equal(checksum.ok, false)
    assert.equal(checksum.error.code, 'INVALID_ARGUMENT')
    const missing = await invoke('server:start', { modelId: 'nope' })
    assert.equal(missing.error.code, 'MODEL_NOT_FOUND')
    assert.ok(missing.error.suggestion, 'a suggestion for the user')
    const chat = await invoke('server:chat', { requestId: 'r', prompt: 'hi' })
    assert.equal(chat.error.code, 'SERVER_NOT_RUNNING')
    const demo = await invoke('resources:offloadDemo', { prompt: 'x' })
    assert.equal(demo.error.code, 'SERVER_ERROR')
    assert.match(demo.error.suggestion, /Start the LLM server and the diffusion server/)
    const noModel = await invoke('search:start', {})
    assert.equal(noModel.error.code, 'INVALID_ARGUMENT')
    const unknown = await invoke('search:start', { embeddingModelId: 'nope', rerankModelId: 'nope' })
    assert.equal(unknown.error.code, 'MODEL_NOT_FOUND')
    const noServer = await invoke('search:query', { query: 'x', documents: ['y'] })
    assert.equal(noServer.error.code, 'SERVER_NOT_RUNNING')
    const noDocuments = await invoke('search:query', { query: 'x', documents: [' '] })
    assert.equal(noDocuments.error.code, 'INVALID_ARGUMENT')
    const stopped = await value('search:status')
    assert.deepEqual([stopped.embedding.status, stopped.rerank.status], ['stopped', 'stopped'], 'neither left running')
    assert.deepEqual(await value('models:list'), [])
  } finally {
    await handlers.dispose()
  }
})

test('the panel\'s whole flow: download, chat, image, offload demo, delete', { skip, timeout: 240_000 }, async () => {
  const { events, invoke, value, handlers } = fakeElectron()
  const files = await serveFiles(modelFiles(real), { chunkBytes: 1 << 20, intervalMs: 5 })
  try {
    const system = await value('system:detect')
    assert.ok(system.cpu.cores > 0 && system.memory.total > 0)

    const llm = await value('models:download', { name: 'tiny', type: 'llm', source: 'url', url: `${files.base}/tiny.gguf`, downloadId: 'dl-llm' })
    assert.equal(llm.type, 'llm')
    const progress = events.filter((e) => e.name === 'models:progress' && e.downloadId === 'dl-llm')
    assert.ok(progress.length > 1, `progress events: ${progress.length}`)
    assert.ok(progress.at(-1).downloaded === llm.size)
    const image = await value('models:download', {
      name: 'tiny-image',
      type: 'diffusion',
      source: 'url',
      url: `${files.base}/diffusion.gguf`,
      components: [
        { role: 'llm', source: 'url', url: `${files.base}/llm.gguf` },
        { role: 'taesd', source: 'url', url: `${files.base}/taesd.gguf` },
      ],
      downloadId: 'dl-image',
    })

    // A download cancelled while it runs: the library's CANCELLED, and nothing registered.
    const slow = await serveFiles(modelFiles(real), { chunkBytes: 64 << 10, intervalMs: 50 })
    try {
      const pending = invoke('models:download', { name: 'cancelled', type: 'llm', source: 'url', url: `${slow.base}/tiny.gguf`, downloadId: 'dl-cancel' })
      while (!events.some((e) => e.name === 'models:progress' && e.downloadId === 'dl-cancel')) await new Promise((r) => setTimeout(r, 20))
      assert.equal(await value('models:cancelDownload', 'dl-cancel'), true)
      assert.equal((await pending).error.code, 'CANCELLED')
    } finally {
      await slow.close()
    }
    assert.deepEqual((await value('models:list')).map((m) => m.id).sort(), [image.id, llm.id].sort())
    assert.equal((await value('models:storage')).models, 2)

    const info = await value('server:start', { modelId: llm.id, port: 'auto', threads: 1, contextSize: 512 })
    assert.equal(info.status, 'running')
    assert.equal(await value('server:health'), true)
    const answer = await value('server:chat', { requestId: 'c1', prompt: 'Hello', maxTokens: 8 })
    const deltas = events.filter((e) => e.name === 'chat:delta' && e.requestId === 'c1')
    assert.ok(answer.chunks > 1 && deltas.length === answer.chunks, `${answer.chunks} chunks, ${deltas.length} events`)
    assert.equal(deltas.map((e) => e.delta).join(''), answer.text)
    assert.ok(events.some((e) => e.name === 'server:event' && e.type === 'state' && e.new === 'running'))
    const logs = await value('server:logs', 50)
    assert.ok(logs.length > 0 && logs.every((e) => ['debug', 'info', 'warn', 'error'].includes(e.level)))

    await value('diffusion:start', { modelId: image.id, port: 'auto', threads: 1, backend: 'one-shot' })
    const made = await value('diffusion:generate', { prompt: 'a red cube', width: 64, height: 64, steps: 3, cfgScale: 1, seed: 4 })
    assert.match(made.imageDataUrl, /^data:image\/png;base64,iVBOR/)
    assert.equal(made.seed, 4)
    const steps = events.filter((e) => e.name === 'diffusion:progress' && e.stage === 'diffusion').map((e) => e.currentStep)
    assert.deepEqual([...new Set(steps)], [1, 2, 3])

    const usage = await value('resources:getUsage')
    assert.equal(usage.llamaServer.status, 'running')
    assert.ok(usage.measured.llama.rssBytes > 0)
    assert.ok(usage.estimate.llm.ram > 0 && usage.estimate.diffusion.ram > 0)
    assert.equal(usage.orchestrator.phase, 'idle')

    const demo = await value('resources:offloadDemo', { prompt: 'a blue sphere', width: 64, height: 64, steps: 2, cfgScale: 1, seed: 2 })
    assert.match(demo.imageDataUrl, /^data:image\/png;base64,/)
    assert.ok(demo.budgetBytes < usage.estimate.llm.ram + usage.estimate.diffusion.ram)
    assert.equal(demo.chat.sentDuringOffload, true)
    const resources = events.filter((e) => e.name === 'resources:event').map((e) => e.type)
    assert.ok(resources.indexOf('offload') < resources.indexOf('reload'), resources.join(','))
    assert.ok(resources.indexOf('reload') < resources.indexOf('chat-answered'), 'the held chat is answered after the reload')
    assert.equal(await value('resources:getSavedState'), null)
    assert.equal((await value('server:status')).status, 'running')

    // Cancelling the image being made.
    const slowImage = invoke('diffusion:generate', { prompt: 'x', width: 64, height: 64, steps: 40, cfgScale: 1 })
    while (!events.some((e) => e.name === 'diffusion:progress' && e.stage === 'diffusion' && e.totalSteps === 40)) await new Promise((r) => setTimeout(r, 20))
    assert.equal(await value('diffusion:cancel'), true)
    assert.equal((await slowImage).error.code, 'CANCELLED')
    assert.equal(await value('diffusion:cancel'), false)

    await value('diffusion:stop')
    await value('server:stop')
    await value('models:delete', llm.id)
    assert.deepEqual((await value('models:list')).map((m) => m.id), [image.id])
  } finally {
    await files.close()
    await handlers.dispose()
  }
  assert.equal(genai.llamaServer.getInfo().status, 'stopped')
})
