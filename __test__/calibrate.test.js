'use strict'

// llamaServer.calibrate() against the real llama-server: each combination runs in a server of its
// own and is measured; the report is stored beside the model and answers later estimates of the
// same configuration.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const os = require('node:os')
const { backends, withTinyModel } = require('./helpers')
const {
  configure,
  LlamaServerManager,
  ModelManager,
  systemInfo,
  CancelledError,
  ServerError,
  ValidationError,
} = require('..')

const { paths: real, skip } = backends()

/** The pids of llama-server processes that run `modelPath` (Linux's /proc). */
function serversOf(modelPath) {
  return fs
    .readdirSync('/proc')
    .filter((pid) => /^\d+$/.test(pid))
    .filter((pid) => {
      try {
        const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')
        return argv.includes(modelPath) && path.basename(argv[0]).startsWith('llama-server')
      } catch {
        return false
      }
    })
}

async function noServerOf(modelPath) {
  const deadline = Date.now() + 1000
  while (serversOf(modelPath).length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25))
  assert.deepEqual(serversOf(modelPath), [], 'no llama-server left running the model')
}

const profile = { contextSize: 1024, parallelRequests: 1 }

/** The chat model (SmolLM2, whose heads take a q8_0 KV cache) installed as `chat` in a fresh data folder. */
async function withChatModel() {
  configure({ dataDir: fs.mkdtempSync(path.join(os.tmpdir(), 'genai-electron-llama-')) })
  process.env.GENAI_ELECTRON_LLAMA_SERVER = real.llamaServer
  return new ModelManager().importModel({ path: real.chatModel, type: 'llm', name: 'chat' })
}

test('two combinations are run, measured and stored; estimates of the same configuration use them', {
  skip,
}, async () => {
  const model = await withChatModel()
  const server = new LlamaServerManager()
  const events = []
  server.on('calibration-progress', (event) => events.push(event))
  const seen = []
  const report = await server.calibrate({
    modelId: 'chat',
    profile,
    fixedConfig: { threads: 1 },
    combos: [
      { label: 'f16', overrides: {} },
      { label: 'q8_0', overrides: { cacheTypeK: 'q8_0' } },
    ],
    workloads: [
      { id: 'cold', kind: 'cold-prefill', prompt: 'The capital of France is', nPredict: 4 },
      {
        id: 'shared',
        kind: 'shared-prefix',
        sharedPrefix: 'Tell me about ',
        suffixes: ['cats.', 'dogs.'],
        nPredict: 2,
      },
    ],
    samples: 2,
    onProgress: (progress) => seen.push(progress),
  })
  assert.equal(report.resultKind, 'report')
  assert.equal(report.status, 'complete')
  assert.equal(report.runs.length, 2)
  for (const run of report.runs) {
    assert.equal(run.status, 'ok', run.error ?? '')
    assert.equal(run.effectiveContextSize, 1024)
    assert.ok(run.loadTimeMs > 0)
    const [cold, shared] = run.workloadResults
    assert.equal(cold.samples.length, 2)
    assert.equal(cold.samples[0].requests[0].predictedTokens, 4, 'every sample makes nPredict tokens')
    assert.ok(cold.samples[0].requests[0].predictedTokensPerSecond > 0)
    assert.equal(shared.samples[0].requests.length, 2, 'one request a suffix')
    assert.ok(shared.samples[0].requests[1].cachedTokens > 0, 'the second suffix reuses the prefix')
    assert.ok(run.scoreMs > 0)
    const { memory } = run
    // llama.cpp's buffers are on the host (no GPU); the process holds them and more.
    assert.equal(memory.vramBytes, 0)
    assert.ok(memory.host.modelBytes > model.size * 0.8, JSON.stringify(memory))
    assert.ok(memory.host.contextBytes > 0 && memory.host.computeBytes > 0)
    const buffers = memory.host.modelBytes + memory.host.contextBytes + memory.host.computeBytes
    assert.ok(memory.peakRssBytes > buffers, `peak RSS ${memory.peakRssBytes} holds the buffers ${buffers}`)
    assert.ok(memory.args.includes('--ctx-size'))
  }
  // q8_0 keys take about half of f16's: the second run's KV cache is smaller.
  assert.ok(report.runs[1].memory.host.contextBytes < report.runs[0].memory.host.contextBytes)
  assert.ok(report.selected && report.selected.startConfig.modelId === 'chat')
  // Progress: each combination starts, warms up, samples and stops; then done at 100 %.
  assert.equal(events.length, seen.length)
  assert.equal(events[0].type, 'calibration-progress')
  const phases = seen.map((p) => p.phase)
  assert.deepEqual([phases[0], phases.at(-1)], ['preparing', 'done'])
  assert.equal(phases.filter((p) => p === 'starting').length, 2)
  assert.equal(phases.filter((p) => p === 'sampling').length, 2 * 2 * 2)
  const percents = seen.map((p) => p.overallPercent)
  assert.deepEqual(
    [...percents].sort((a, b) => a - b),
    percents,
    'the percentage only grows',
  )
  assert.equal(percents.at(-1), 100)
  await noServerOf(model.path)

  // Stored beside the model, newest first.
  const stored = JSON.parse(fs.readFileSync(path.join(path.dirname(model.path), 'llama-calibration.json'), 'utf8'))
  assert.equal(stored.reports.length, 1)
  assert.deepEqual(stored.reports[0].runs[0].memory, report.runs[0].memory)

  // The same configuration is now sized by the measurement; another is not.
  const measured = await systemInfo.canRunModel(model, { contextSize: 1024, gpuLayers: 0 })
  assert.equal(measured.estimate.source, 'measured')
  assert.equal(measured.estimate.ram, report.runs[0].memory.peakRssBytes)
  assert.equal(measured.estimate.kvCache, report.runs[0].memory.host.contextBytes)
  const other = await systemInfo.canRunModel(model, { contextSize: 2048, gpuLayers: 0 })
  assert.notEqual(other.estimate.source, 'measured')
  // And the server starts as measured.
  const info = await server.start({ modelId: 'chat', port: 'auto', threads: 1, contextSize: 1024 })
  assert.equal(info.status, 'running')
  await server.stop()
})

test('calibrate() is refused while the server runs, and a start is refused while it calibrates', { skip }, async () => {
  await withTinyModel(real)
  const server = new LlamaServerManager()
  await server.start({ modelId: 'tiny', port: 'auto', threads: 1, contextSize: 512 })
  await assert.rejects(server.calibrate({ modelId: 'tiny', profile }), (err) => {
    assert.ok(err instanceof ServerError, String(err))
    assert.equal(err.code, 'SERVER_BUSY')
    assert.match(err.message, /running/)
    assert.match(err.details.suggestion, /stop/)
    return true
  })
  await server.stop()
  const calibrating = server.calibrate({ modelId: 'tiny', profile, fixedConfig: { threads: 1 } })
  await assert.rejects(server.start({ modelId: 'tiny', port: 'auto' }), (err) => err.code === 'SERVER_BUSY')
  assert.equal((await calibrating).status, 'complete')
})

test('an aborted calibration stops its server, stores nothing and rejects with CancelledError', { skip }, async () => {
  await withTinyModel(real)
  const model = await new ModelManager().getModelInfo('tiny')
  const server = new LlamaServerManager()
  const controller = new AbortController()
  const calibrating = server.calibrate({
    modelId: 'tiny',
    profile,
    fixedConfig: { threads: 1 },
    // Long enough that the abort comes while it generates.
    workloads: [{ id: 'long', kind: 'cold-prefill', prompt: 'Once upon a time', nPredict: 100000 }],
    signal: controller.signal,
    onProgress: (progress) => progress.phase === 'warmup' && controller.abort(),
  })
  await assert.rejects(calibrating, CancelledError)
  await noServerOf(model.path)
  assert.ok(!fs.existsSync(path.join(path.dirname(model.path), 'llama-calibration.json')))
  // An abort before the call rejects at once.
  await assert.rejects(server.calibrate({ modelId: 'tiny', profile, signal: AbortSignal.abort() }), CancelledError)
})

test('bad calibration configs are ValidationErrors naming the field; a configuration that cannot fit is skipped', {
  skip,
}, async () => {
  await withTinyModel(real)
  const server = new LlamaServerManager()
  const refused = async (config, pattern) =>
    assert.rejects(server.calibrate(config), (err) => err instanceof ValidationError && pattern.test(err.message))
  await refused({ modelId: 'tiny' }, /profile/)
  await refused({ modelId: 'tiny', profiles: [profile] }, /adaptive/)
  await refused({ modelId: 'tiny', profile, combos: [{ overrides: { port: 9 } }] }, /port/)
  await refused({ modelId: 'tiny', profile, samples: 99 }, /samples/)
  await assert.rejects(server.calibrate({ modelId: 'missing', profile }), (err) => err.code === 'MODEL_NOT_FOUND')
  // A context far beyond this machine: refused by the memory check, so never started.
  const report = await server.calibrate({ modelId: 'tiny', profile: { contextSize: 500_000_000, parallelRequests: 1 } })
  assert.equal(report.status, 'no-viable-candidate')
  assert.equal(report.runs.length, 0)
  assert.equal(report.skippedCombos.length, 1)
  assert.match(report.skippedCombos[0].reason, /cannot run/)
  assert.equal(report.selected, null)
  // A combination llama-server cannot load (this model's heads do not take q8_0 keys): a run
  // with its status and last lines, and the other combinations still run.
  const mixed = await server.calibrate({
    modelId: 'tiny',
    profile,
    fixedConfig: { threads: 1 },
    combos: [{ overrides: { cacheTypeK: 'q8_0' } }, { overrides: {} }],
  })
  assert.deepEqual(
    mixed.runs.map((r) => r.status),
    ['crashed', 'ok'],
  )
  assert.match(mixed.runs[0].stderrTail, /does not divide/)
  assert.equal(mixed.runs[0].memory, null)
  assert.deepEqual(mixed.selected.combo, { overrides: {} })
})
