'use strict'

// llamaServer.calibrate() against the real llama-server: each combination runs in a server of its
// own and is measured; the report is stored beside the model and answers later estimates of the
// same configuration.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const os = require('node:os')
const { backends, withTinyModel, downloadTinyImageSet } = require('./helpers')
const {
  configure,
  DiffusionServerManager,
  ResourceOrchestrator,
  LlamaServerManager,
  ModelManager,
  systemInfo,
  CancelledError,
  ServerError,
  ValidationError,
} = require('..')

const { paths: real, skip } = backends()

/** The pids of `program` processes whose arguments name `modelPath` (Linux's /proc). */
function serversOf(modelPath, program = 'llama-server') {
  return fs
    .readdirSync('/proc')
    .filter((pid) => /^\d+$/.test(pid))
    .filter((pid) => {
      try {
        const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')
        return argv.includes(modelPath) && path.basename(argv[0]).startsWith(program)
      } catch {
        return false
      }
    })
}

async function noServerOf(modelPath, program = 'llama-server') {
  const deadline = Date.now() + 1000
  while (serversOf(modelPath, program).length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25))
  assert.deepEqual(serversOf(modelPath, program), [], `no ${program} left running the model`)
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

/** The tiny image set installed as `tiny-image` in a fresh data folder. */
async function withTinyImageSet() {
  configure({ dataDir: fs.mkdtempSync(path.join(os.tmpdir(), 'genai-electron-diffusion-')) })
  process.env.GENAI_ELECTRON_SD_SERVER = real.sdServer
  process.env.GENAI_ELECTRON_SD_CLI = real.sdCli
  return downloadTinyImageSet(new ModelManager(), real)
}

const generation = { steps: 1, cfgScale: 1, sampler: 'euler', threads: 1 }

test('diffusionServer.calibrate(): each placement makes each size, smallest first, measured and stored; the orchestrator sizes such an image by it', {
  skip,
}, async () => {
  const model = await withTinyImageSet()
  const server = new DiffusionServerManager()
  const seen = []
  const report = await server.calibrate({
    modelId: 'tiny-image',
    sizes: [
      { width: 96, height: 96 },
      { width: 64, height: 64 },
    ],
    generation,
    combos: [{ label: 'as start() places it' }, { label: 'VAE on the CPU', vaeOnCpu: true }],
    onProgress: (progress) => seen.push(progress),
  })
  assert.equal(report.modelId, 'tiny-image')
  assert.deepEqual(
    report.runs.map((r) => [r.combo.label, r.size.width, r.status]),
    [
      ['as start() places it', 64, 'ok'],
      ['as start() places it', 96, 'ok'],
      ['VAE on the CPU', 64, 'ok'],
      ['VAE on the CPU', 96, 'ok'],
    ],
  )
  for (const run of report.runs) {
    assert.equal(run.samplesMs.length, 1)
    assert.ok(run.timeTakenMs > 0)
    // sd-server holds its files and more; its params are what sd reported.
    assert.ok(run.paramsRamBytes > 0 && run.ramPeakBytes > model.size, JSON.stringify(run))
    assert.equal(run.vramPeakBytes, 0, 'no device')
  }
  assert.equal(report.runs[0].resolved.vaeOnCpu, false)
  assert.equal(report.runs[2].resolved.vaeOnCpu, true)
  // A larger image's peak is at least the smaller's (the high-water mark after it).
  assert.ok(report.runs[1].ramPeakBytes >= report.runs[0].ramPeakBytes)
  assert.deepEqual(Object.keys(report.recommended).sort(), ['64x64', '96x96'])
  const percents = seen.map((p) => p.overallPercent)
  assert.deepEqual(
    [...percents].sort((a, b) => a - b),
    percents,
  )
  assert.deepEqual([seen[0].phase, seen.at(-1).phase], ['preparing', 'done'])
  assert.equal(seen.filter((p) => p.phase === 'sampling').length, 4)
  await noServerOf(model.path, 'sd-server')
  const stored = path.join(path.dirname(model.path), 'diffusion-calibration.json')
  assert.equal(JSON.parse(fs.readFileSync(stored, 'utf8')).reports.length, 1)

  // Started as the first combination ran: a measured size is the measurement, another is not.
  await server.start({ modelId: 'tiny-image', backend: 'resident', port: 'auto', threads: 1 })
  try {
    const orchestrator = new ResourceOrchestrator(undefined, undefined, server)
    const measured = (await orchestrator.estimate({ width: 64, height: 64 })).diffusion
    assert.equal(measured.source, 'measured')
    assert.equal(measured.ram, report.runs[0].ramPeakBytes)
    const other = (await orchestrator.estimate({ width: 80, height: 80 })).diffusion
    assert.equal(other.source, 'estimated')
    orchestrator.dispose()
    // Never beside a running server.
    await assert.rejects(
      server.calibrate({ modelId: 'tiny-image', sizes: [{ width: 64, height: 64 }], generation }),
      (err) => {
        assert.ok(err instanceof ServerError && err.code === 'SERVER_BUSY', String(err))
        return true
      },
    )
  } finally {
    await server.stop()
  }
})

/** Peak RSS of sd-cli making one 64×64 image of the tiny set, by the kernel (getrusage). */
function sdCliPeakByKernel() {
  const { spawnSync } = require('node:child_process')
  const [llm, taesd] = [real.diffusionComponents.llm, real.diffusionComponents.taesd]
  const args = ['--diffusion-model', real.diffusionModel, '--llm', llm, '--taesd', taesd, '-p', 'a lighthouse']
  args.push('-W', '64', '-H', '64', '--steps', '1', '--cfg-scale', '1', '-t', '1')
  args.push('-o', path.join(os.tmpdir(), `genai-electron-peak-${process.pid}.png`))
  const script =
    'import resource, subprocess, sys\nsubprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)\nprint(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)'
  const env = { ...process.env, GGML_DISABLE_VULKAN: '1' }
  const run = spawnSync('python3', ['-c', script, real.sdCli, ...args], { encoding: 'utf8', env })
  assert.equal(run.status, 0, run.stderr)
  return Number(run.stdout.trim()) * 1024
}

test("diffusionServer.calibrate() of one-shot images measures each sd-cli's peak, and the orchestrator sizes a one-shot image by it", {
  skip,
}, async () => {
  const model = await withTinyImageSet()
  const server = new DiffusionServerManager()
  const sizes = [{ width: 64, height: 64 }]
  // genai-electron 0.26's usageMode 'single' is one-shot too.
  for (const how of [{ backend: 'one-shot' }, { usageMode: 'single' }]) {
    const report = await server.calibrate({ modelId: 'tiny-image', sizes, generation, ...how })
    const [run] = report.runs
    assert.equal(run.status, 'ok', JSON.stringify(run))
    assert.equal(path.basename(run.binary), path.basename(real.sdCli))
    const kernel = sdCliPeakByKernel()
    assert.ok(
      Math.abs(run.ramPeakBytes - kernel) < 0.1 * kernel,
      `${run.ramPeakBytes} measured, ${kernel} by the kernel`,
    )
  }
  await noServerOf(model.path, 'sd-cli')
  await server.start({ modelId: 'tiny-image', backend: 'one-shot', port: 'auto', threads: 1 })
  try {
    const orchestrator = new ResourceOrchestrator(undefined, undefined, server)
    const estimate = (await orchestrator.estimate({ width: 64, height: 64 })).diffusion
    assert.equal(estimate.source, 'measured')
    orchestrator.dispose()
  } finally {
    await server.stop()
  }
})

test('diffusionServer.calibrate(): aborted, its sd-server is gone and nothing is stored; bad configs are ValidationErrors; a start waits its turn', {
  skip,
}, async () => {
  const model = await withTinyImageSet()
  const server = new DiffusionServerManager()
  const controller = new AbortController()
  const calibrating = server.calibrate({
    modelId: 'tiny-image',
    sizes: [{ width: 64, height: 64 }],
    generation,
    samples: 3,
    signal: controller.signal,
    onProgress: (progress) => progress.phase === 'sampling' && controller.abort(),
  })
  await assert.rejects(server.start({ modelId: 'tiny-image', port: 'auto' }), (err) => err.code === 'SERVER_BUSY')
  await assert.rejects(calibrating, CancelledError)
  await noServerOf(model.path, 'sd-server')
  assert.ok(!fs.existsSync(path.join(path.dirname(model.path), 'diffusion-calibration.json')))
  const refused = async (config, pattern) =>
    assert.rejects(
      server.calibrate({ modelId: 'tiny-image', generation, ...config }),
      (err) => err instanceof ValidationError && pattern.test(err.message),
    )
  await refused({ sizes: [] }, /sizes/)
  await refused({ sizes: [{ width: 65, height: 64 }] }, /sizes\[0\]/)
  await refused({ sizes: [{ width: 64, height: 64 }], generation: { ...generation, sampler: 'fast' } }, /sampler/)
  await refused({ sizes: [{ width: 64, height: 64 }], combos: [{ gpuLayers: 0 }] }, /gpuLayers/)
})
