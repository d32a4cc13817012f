'use strict'

// The ResourceOrchestrator against the real llama-server, sd-cli and tiny models: offload,
// image, reload on the same port, and chat requests made meanwhile wait and succeed.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const { backends, startTinyServers, waitFor } = require('./helpers')
const { LlamaServerManager, ModelManager, ResourceOrchestrator, ServerError, ValidationError } = require('..')

const { paths: real, skip } = backends()

const IMAGE = { prompt: 'a red cube', width: 64, height: 64, steps: 2, cfgScale: 1, seed: 7 }
const TIGHT = { ramBudgetBytes: 1 << 20, headroom: 0 }

const servers = (diffusionConfig) => startTinyServers(real, diffusionConfig)

function chat(port, stream = false) {
  return fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ messages: [{ role: 'user', content: 'Hello' }], max_tokens: 8, stream }),
  })
}

function record(orchestrator) {
  const seen = []
  for (const type of ['offload', 'reload', 'reload-failed', 'phase', 'queued', 'dequeued']) {
    orchestrator.on(type, (e) => seen.push(type === 'phase' ? e.phase : type))
  }
  return seen
}

test('options are checked', () => {
  assert.throws(
    () => new ResourceOrchestrator(undefined, undefined, undefined, undefined, { ramBudget: 1 }),
    ValidationError,
  )
  assert.throws(
    () => new ResourceOrchestrator(undefined, undefined, undefined, undefined, { ramBudgetBytes: 0 }),
    ValidationError,
  )
  assert.throws(() => new ResourceOrchestrator(undefined, {}), ValidationError)
  assert.throws(
    () => new ResourceOrchestrator(undefined, undefined, undefined, undefined, { maxQueuedRequests: -1 }),
    ValidationError,
  )
  assert.throws(
    () => new ResourceOrchestrator(undefined, undefined, undefined, undefined, { queueTimeout: '5m' }),
    ValidationError,
  )
})

test('dispose takes back the listeners an orchestrator added to its llama servers', () => {
  const llamas = [new LlamaServerManager(), new LlamaServerManager()]
  const count = () => llamas.map((llama) => llama.listenerCount('queued') + llama.listenerCount('dequeued'))
  const before = count()
  const orchestrator = new ResourceOrchestrator(undefined, llamas)
  assert.deepEqual(
    count(),
    before.map((n) => n + 2),
  )
  orchestrator.dispose()
  assert.deepEqual(count(), before)
})

test('too little room: offload, image, reload on the same port, and a chat sent meanwhile waits and succeeds', {
  skip,
}, async () => {
  const { llama, diffusion, info, stop } = await servers()
  try {
    // One place in the queue while offloaded (the server's own bound is 64).
    const orchestrator = new ResourceOrchestrator(undefined, llama, diffusion, undefined, {
      ...TIGHT,
      maxQueuedRequests: 1,
    })
    const estimate = await orchestrator.estimate(IMAGE)
    assert.equal(estimate.needsOffload, true)
    assert.equal(estimate.llm.source, 'measured')
    assert.ok(estimate.llm.ram > 1 << 20 && estimate.diffusion.ram > 100e6, JSON.stringify(estimate))
    assert.equal(await orchestrator.wouldNeedOffload(IMAGE), true)
    const seen = record(orchestrator)
    let waiting
    let queueDuringImage
    orchestrator.once('offload', () => {
      assert.equal(orchestrator.getSavedState().config.contextSize, 512)
      assert.ok(orchestrator.getSavedState().savedAt instanceof Date)
      waiting = chat(info.port)
    })
    let refused
    orchestrator.once('queued', () => {
      queueDuringImage = orchestrator.getInfo().queue
      refused = chat(info.port)
    })
    const steps = []
    const result = await orchestrator.orchestrateImageGeneration({ ...IMAGE, onProgress: (step) => steps.push(step) })
    assert.equal(result.width, 64)
    assert.ok(steps.length > 0)
    const answer = await waiting
    assert.equal(answer.status, 200)
    assert.equal((await answer.json()).usage.completion_tokens, 8)
    const full = await refused
    assert.equal(full.status, 503)
    assert.equal(full.headers.get('retry-after'), '5')
    assert.equal((await full.json()).error.code, 'QUEUE_FULL')
    const after = llama.getInfo()
    assert.equal(after.status, 'running')
    assert.equal(after.port, info.port)
    assert.notEqual(after.pid, info.pid)
    assert.equal(queueDuringImage.length, 1)
    assert.deepEqual(orchestrator.getInfo(), {
      phase: 'idle',
      queue: { length: 0, longestWaitMs: 0 },
      imagesWaiting: 0,
    })
    // The chat request joins the queue during the offload and leaves it once the LLM is back.
    assert.deepEqual(
      seen.filter((e) => !['queued', 'dequeued'].includes(e)),
      ['draining', 'offload', 'offloading', 'generating', 'reloading', 'reload', 'idle'],
    )
    assert.ok(
      seen.indexOf('queued') > seen.indexOf('offload') && seen.indexOf('dequeued') > seen.indexOf('reloading'),
      seen.join(' '),
    )
    assert.equal(orchestrator.getSavedState(), undefined)
  } finally {
    await stop()
  }
})

test('while the LLM is offloaded, /props, the model list and health answer at once as before; a chat waits', {
  skip,
}, async () => {
  const { llama, diffusion, info, stop } = await servers()
  const DESCRIBING = ['/props', '/v1/models', '/health', '/v1/health']
  const ask = (path) => fetch(`http://127.0.0.1:${info.port}${path}`, { signal: AbortSignal.timeout(5000) })
  try {
    // What a client such as genai-lite asks before a chat (with a 5 s timeout).
    const before = await Promise.all(DESCRIBING.map(async (path) => (await ask(path)).text()))
    const orchestrator = new ResourceOrchestrator(undefined, llama, diffusion, undefined, TIGHT)
    let during
    orchestrator.on('phase', ({ phase }) => {
      if (phase !== 'generating' || during) return
      during = (async () => {
        assert.equal(llama.getInfo().status, 'stopped', 'the LLM is out')
        const started = Date.now()
        const answers = await Promise.all(DESCRIBING.map(ask))
        const elapsed = Date.now() - started
        return {
          statuses: answers.map((a) => a.status),
          bodies: await Promise.all(answers.map((a) => a.text())),
          elapsed,
          held: chat(info.port),
        }
      })()
    })
    await orchestrator.orchestrateImageGeneration(IMAGE)
    const { statuses, bodies, elapsed, held } = await during
    assert.deepEqual(statuses, [200, 200, 200, 200])
    assert.deepEqual(bodies, before)
    assert.ok(elapsed < 1000, `answered in ${elapsed} ms`)
    const answer = await held
    assert.equal(answer.status, 200, 'the chat waited for the reload')
  } finally {
    await stop()
  }
})

test('every door is orchestrated: an HTTP image (sync, and a job to poll) and generateImage offload and reload the LLM, a chat sent meanwhile is answered, a DELETE leaves the queue', {
  skip,
}, async () => {
  const { llama, diffusion, info, stop } = await servers()
  try {
    const orchestrator = new ResourceOrchestrator(undefined, llama, diffusion, undefined, TIGHT)
    assert.equal(diffusion.getOrchestrator(), orchestrator, 'it serves the diffusion server now')
    const seen = record(orchestrator)
    const base = `http://localhost:${diffusion.getPort()}/v1/images/generations`
    const post = (body, headers = {}) =>
      fetch(base, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...headers },
        body: JSON.stringify(body),
      })

    // A renderer's synchronous POST, with a chat sent once the LLM is held.
    let held
    orchestrator.once('offload', () => {
      held = chat(info.port)
    })
    const answer = await post(IMAGE)
    assert.equal(answer.status, 200)
    assert.equal((await answer.json()).seed, IMAGE.seed)
    await waitFor(orchestrator, 'phase', () => orchestrator.getInfo().phase === 'idle', { what: 'the LLM back' })
    assert.equal((await held).status, 200, 'the chat waited for the reload and was answered')
    const afterHttp = llama.getInfo()
    assert.deepEqual([afterHttp.status, afterHttp.port], ['running', info.port])
    assert.notEqual(afterHttp.pid, info.pid, 'offloaded and reloaded')
    assert.deepEqual(
      seen.filter((e) => e === 'offload' || e === 'reload'),
      ['offload', 'reload'],
    )

    // A job to poll (genai-lite with progress), and a second one cancelled by DELETE while it
    // waits behind the first: it leaves the queue and causes no second offload.
    const first = await (await post({ ...IMAGE, steps: 20 }, { Prefer: 'respond-async' })).json()
    const second = await (await post(IMAGE, { Prefer: 'respond-async' })).json()
    const deleted = await fetch(`${base}/${second.id}`, { method: 'DELETE' })
    assert.deepEqual([deleted.status, (await deleted.json()).status], [200, 'cancelled'])
    let job
    do {
      await new Promise((resolve) => setTimeout(resolve, 50))
      job = await (await fetch(`${base}/${first.id}`)).json()
    } while (job.status === 'pending' || job.status === 'in_progress')
    assert.equal(job.status, 'complete', JSON.stringify(job.error))
    await waitFor(orchestrator, 'phase', () => orchestrator.getInfo().phase === 'idle', { what: 'the LLM back' })
    assert.deepEqual(
      seen.filter((e) => e === 'offload' || e === 'reload'),
      ['offload', 'reload', 'offload', 'reload'],
    )

    // The JS API of the diffusion server goes through the same gate.
    await diffusion.generateImage(IMAGE)
    await waitFor(orchestrator, 'phase', () => orchestrator.getInfo().phase === 'idle', { what: 'the LLM back' })
    assert.equal(seen.filter((e) => e === 'reload').length, 3)
    assert.equal((await chat(info.port)).status, 200)
  } finally {
    await stop()
  }
})

test("an orchestrator's own calls follow its options; the newest serves the other doors until dispose()", {
  skip,
}, async () => {
  const { llama, diffusion, info, stop } = await servers()
  try {
    const tight = new ResourceOrchestrator(undefined, llama, diffusion, undefined, TIGHT)
    const roomy = new ResourceOrchestrator(undefined, llama, diffusion, undefined, { ramBudgetBytes: 2 ** 50 })
    assert.equal(diffusion.getOrchestrator(), roomy)
    const seen = record(tight)
    await diffusion.generateImage(IMAGE)
    assert.equal(llama.getInfo().pid, info.pid, 'the roomy one decided: no offload')
    await tight.orchestrateImageGeneration(IMAGE)
    const reloaded = llama.getInfo().pid
    assert.notEqual(reloaded, info.pid, "the tight one's own call offloaded")
    roomy.dispose()
    assert.equal(diffusion.getOrchestrator(), tight)
    await diffusion.generateImage(IMAGE)
    await waitFor(tight, 'phase', () => tight.getInfo().phase === 'idle', { what: 'the LLM back' })
    assert.notEqual(llama.getInfo().pid, reloaded, 'the tight one decides again')
    assert.deepEqual(
      seen.filter((e) => e === 'offload' || e === 'reload'),
      ['offload', 'reload', 'offload', 'reload'],
    )
  } finally {
    await stop()
  }
})

test('enough room: nothing stops; an image the stopped server refuses stops nothing either', { skip }, async () => {
  const { llama, diffusion, info, stop } = await servers()
  try {
    const roomy = new ResourceOrchestrator(undefined, llama, diffusion, undefined, { ramBudgetBytes: 2 ** 50 })
    assert.equal(await roomy.wouldNeedOffload(IMAGE), false)
    await roomy.orchestrateImageGeneration(IMAGE)
    assert.equal(llama.getInfo().pid, info.pid, 'not restarted')

    const tight = new ResourceOrchestrator(undefined, llama, diffusion, undefined, TIGHT)
    await diffusion.stop()
    await assert.rejects(tight.orchestrateImageGeneration(IMAGE), ServerError)
    assert.equal(llama.getInfo().status, 'running')
    assert.equal(llama.getInfo().pid, info.pid, 'refused before its turn: no offload')
    assert.equal((await chat(info.port)).status, 200)
  } finally {
    await stop()
  }
})

test('a resident sd-server that does not fit beside the LLM yields when the LLM comes back, and starts again for the next image', {
  skip,
}, async () => {
  const { llama, diffusion, info, stop } = await servers({ backend: 'resident' })
  try {
    const orchestrator = new ResourceOrchestrator(undefined, llama, diffusion, undefined, TIGHT)
    await orchestrator.orchestrateImageGeneration(IMAGE)
    assert.equal(diffusion.getInfo().backendStatus, 'stopped', 'its memory went back to the LLM')
    assert.equal(llama.getInfo().status, 'running')
    assert.equal(llama.getInfo().port, info.port)
    await orchestrator.orchestrateImageGeneration(IMAGE)
    assert.equal(llama.getInfo().status, 'running')
  } finally {
    await stop()
  }
})

test('a streamed reply in progress is finished whole before the offload stops the server', { skip }, async () => {
  const { llama, diffusion, info, stop } = await servers()
  try {
    const orchestrator = new ResourceOrchestrator(undefined, llama, diffusion, undefined, TIGHT)
    const streaming = await chat(info.port, true)
    const image = orchestrator.orchestrateImageGeneration(IMAGE)
    const text = await streaming.text()
    assert.match(text, /data: \[DONE\]/)
    await image
    assert.equal(llama.getInfo().status, 'running')
  } finally {
    await stop()
  }
})

test('a reload that fails is reported, the state is kept, and waiting requests get 503 with the reason', {
  skip,
}, async () => {
  const { llama, diffusion, info, stop } = await servers()
  try {
    const orchestrator = new ResourceOrchestrator(undefined, llama, diffusion, undefined, TIGHT)
    const failed = new Promise((resolve) => orchestrator.once('reload-failed', resolve))
    const { path: modelPath } = await new ModelManager().getModelInfo('tiny')
    let waiting
    orchestrator.once('offload', () => {
      fs.writeFileSync(modelPath, Buffer.alloc(fs.statSync(modelPath).size))
      waiting = chat(info.port)
    })
    await orchestrator.orchestrateImageGeneration(IMAGE)
    assert.match((await failed).error, /exited during start/)
    assert.equal(orchestrator.getSavedState().wasRunning, true)
    const answer = await waiting
    assert.equal(answer.status, 503)
    assert.match((await answer.json()).error.message, /exited during start/)
  } finally {
    await stop()
  }
})

test('SIGKILL of the Node parent during an orchestrated image leaves no llama-server or sd-cli behind', {
  skip,
}, async () => {
  const dataDir = require('node:fs').mkdtempSync(
    require('node:path').join(require('node:os').tmpdir(), 'genai-electron-orch-kill-'),
  )
  const { ROOT } = require('./helpers')
  const script = `
    const { configure, llamaServer, diffusionServer, modelManager, ResourceOrchestrator } = require(${JSON.stringify(ROOT)})
    const { serveFiles, downloadTinyImageSet } = require(${JSON.stringify(require('node:path').join(ROOT, '__test__', 'helpers.js'))})
    const real = ${JSON.stringify(real)}
    configure({ dataDir: ${JSON.stringify(dataDir)} })
    ;(async () => {
      await serveFiles({ '/tiny.gguf': real.llmModel }, (base) => modelManager.downloadModel({ source: 'url', url: base + '/tiny.gguf', name: 'tiny', type: 'llm' }))
      await downloadTinyImageSet(modelManager, real)
      await llamaServer.start({ modelId: 'tiny', port: 'auto', threads: 1, contextSize: 512 })
      await diffusionServer.start({ modelId: 'tiny-image', backend: 'one-shot', port: 'auto', threads: 1 })
      const orchestrator = new ResourceOrchestrator(undefined, undefined, undefined, undefined, { ramBudgetBytes: 1e6, headroom: 0 })
      orchestrator.on('phase', (e) => console.log('phase', e.phase))
      let progress = 0
      await orchestrator.orchestrateImageGeneration({ prompt: 'a red cube', width: 256, height: 256, steps: 8, cfgScale: 1,
        onProgress: () => progress++ || console.log('sd-cli progress') })
    })()`
  const { spawn } = require('node:child_process')
  const app = spawn(process.execPath, ['-e', script], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, GENAI_ELECTRON_LLAMA_SERVER: real.llamaServer, GENAI_ELECTRON_SD_CLI: real.sdCli },
  })
  let out = ''
  app.stdout.on('data', (d) => (out += d))
  const ours = () =>
    fs
      .readdirSync('/proc')
      .filter((p) => /^\d+$/.test(p))
      .filter((pid) => {
        try {
          const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
          return stat.split(' ')[2] !== 'Z' && fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(dataDir)
        } catch {
          return false
        }
      })
  // The app says when sd-cli reports progress: an image is being made.
  await waitFor(app.stdout, 'data', () => out.includes('phase generating') && out.includes('sd-cli progress'), {
    timeout: 60000,
    what: () => `an image under way: ${out}`,
  })
  assert.ok(ours().length > 0, `sd-cli runs: ${out}`)
  app.kill('SIGKILL')
  const gone = Date.now() + 2000
  // Polled against the deadline on purpose: the app that could have told is dead, and its
  // servers are not our children, so no event or exit status reaches this process.
  while (ours().length > 0) {
    assert.ok(Date.now() < gone, `left behind: ${ours()}`)
    await new Promise((r) => setTimeout(r, 25))
  }
})
