'use strict'

// The swap policy against the real llama-server, sd-cli/sd-server and tiny models: bursts of
// images collated behind one offload, chat that never waits past maxChatWait plus one image,
// cancels that cause no offload, the diffusion side yielding to the LLM, and the stall watchdog.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { backends, startTinyServers, waitFor } = require('./helpers')
const { ResourceOrchestrator, CancelledError, ServerError, ValidationError } = require('..')

const { paths: real, skip } = backends()

const IMAGE = { prompt: 'a red cube', width: 64, height: 64, steps: 2, cfgScale: 1, seed: 7 }
/** Long enough that a chat sent during it waits a while. */
const SLOW_IMAGE = { ...IMAGE, width: 128, height: 128, steps: 10 }
const TIGHT = { ramBudgetBytes: 1 << 20, headroom: 0 }

const servers = (diffusionConfig) => startTinyServers(real, diffusionConfig)

/** A chat request through the gateway; resolves with its status and how long it took. */
async function chat(port, signal) {
  const began = Date.now()
  const answer = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ messages: [{ role: 'user', content: 'Hello' }], max_tokens: 4 }),
    signal,
  })
  await answer.text()
  return { status: answer.status, waitedMs: Date.now() - began }
}

/** Counts the orchestrator's events by type, and times each reload. */
function record(orchestrator) {
  const seen = { offload: 0, reload: 0, 'reload-failed': 0, released: [], phases: [], reloadMs: [] }
  let reloading = 0
  for (const type of ['offload', 'reload', 'reload-failed']) orchestrator.on(type, () => seen[type]++)
  orchestrator.on('diffusion-released', (e) => seen.released.push(e.reason))
  orchestrator.on('phase', ({ phase }) => {
    seen.phases.push(phase)
    if (phase === 'reloading') reloading = Date.now()
  })
  orchestrator.on('reload', () => seen.reloadMs.push(Date.now() - reloading))
  return seen
}

/** Resolves when the orchestrator has begun its `n`th image (a 'phase' event to `generating`). */
function nthImage(orchestrator, seen, n) {
  return waitFor(orchestrator, 'phase', () => seen.phases.filter((p) => p === 'generating').length >= n, {
    timeout: 10 * 60_000,
    what: () => `image ${n} to begin (phases: ${seen.phases})`,
  })
}

test('swap options are checked', () => {
  const make = (options) => () => new ResourceOrchestrator(undefined, undefined, undefined, undefined, options)
  assert.throws(make({ policy: 'lifo' }), (e) => e instanceof ValidationError && /collate/.test(e.message))
  assert.throws(make({ maxChatWait: -1 }), ValidationError)
  assert.throws(make({ reloadAfterIdle: 'soon' }), ValidationError)
  assert.equal(
    new ResourceOrchestrator(undefined, undefined, undefined, undefined, {
      policy: 'fifo',
      maxChatWait: 1000,
      reloadAfterIdle: 0,
    }).getInfo().imagesWaiting,
    0,
  )
})

test('ten images and five chats under a budget that forces offload: all succeed, at most two reloads, no chat waits past maxChatWait plus one image', {
  skip,
}, async () => {
  const { llama, diffusion, info, stop } = await servers()
  try {
    const orchestrator = new ResourceOrchestrator(undefined, llama, diffusion, undefined, TIGHT)
    const seen = record(orchestrator)
    const images = Array.from({ length: 10 }, (_, i) => orchestrator.orchestrateImageGeneration({ ...IMAGE, seed: i }))
    await nthImage(orchestrator, seen, 1)
    assert.ok(orchestrator.getInfo().imagesWaiting >= 8, JSON.stringify(orchestrator.getInfo()))
    // A chat while each of images 1, 3, 5, 7 and 9 is made.
    const chats = []
    for (const n of [1, 3, 5, 7, 9]) {
      await nthImage(orchestrator, seen, n)
      chats.push(chat(info.port))
    }
    const results = await Promise.all(images)
    const answers = await Promise.all(chats)
    assert.deepEqual(
      answers.map((a) => a.status),
      [200, 200, 200, 200, 200],
    )
    assert.equal(results.length, 10)
    assert.ok(seen.reload <= 2, `${seen.reload} reloads`)
    assert.equal(seen.offload, seen.reload)
    const longestImage = Math.max(...results.map((r) => r.timeTaken))
    const limit = 30_000 + longestImage + Math.max(...seen.reloadMs) + 2_000
    for (const a of answers) assert.ok(a.waitedMs <= limit, `a chat waited ${a.waitedMs} ms (limit ${limit})`)
    assert.equal(orchestrator.getInfo().phase, 'idle')
    assert.equal(llama.getInfo().status, 'running')
  } finally {
    await stop()
  }
})

test('a chat that has waited maxChatWait brings the LLM back between images; one cancelled before changes nothing', {
  skip,
}, async () => {
  const { llama, diffusion, info, stop } = await servers()
  try {
    const orchestrator = new ResourceOrchestrator(undefined, llama, diffusion, undefined, {
      ...TIGHT,
      maxChatWait: 200,
    })
    const seen = record(orchestrator)
    const images = [1, 2, 3].map((seed) => orchestrator.orchestrateImageGeneration({ ...SLOW_IMAGE, seed }))
    await nthImage(orchestrator, seen, 1)
    // Sent and given up on during the first image: no reload for it.
    const gone = new AbortController()
    const cancelled = chat(info.port, gone.signal).catch((e) => e.name)
    await new Promise((resolve) => orchestrator.once('queued', resolve))
    gone.abort()
    assert.equal(await cancelled, 'AbortError')
    await nthImage(orchestrator, seen, 2)
    assert.equal(seen.reload, 0, 'the cancelled chat did not bring the LLM back')
    // Sent during the second image: it waits past maxChatWait, so the LLM comes back after it.
    const kept = chat(info.port)
    await Promise.all(images)
    const answer = await kept
    assert.equal(answer.status, 200)
    assert.deepEqual([seen.offload, seen.reload], [2, 2], 'once for the chat, once at the end')
    const i = seen.phases.indexOf('reloading')
    assert.ok(
      i > 0 && seen.phases.slice(i).includes('generating'),
      `the third image came after the chat's reload: ${seen.phases}`,
    )
    assert.ok(answer.waitedMs < 200 + 30_000, `${answer.waitedMs} ms`)
  } finally {
    await stop()
  }
})

test('an image cancelled while it waits leaves at once and causes no offload', { skip }, async () => {
  const { llama, diffusion, stop } = await servers()
  try {
    const orchestrator = new ResourceOrchestrator(undefined, llama, diffusion, undefined, { ...TIGHT, policy: 'fifo' })
    const seen = record(orchestrator)
    const first = orchestrator.orchestrateImageGeneration(SLOW_IMAGE)
    let firstDone = false
    first.finally(() => (firstDone = true)).catch(() => {})
    const abort = new AbortController()
    const second = orchestrator.orchestrateImageGeneration({ ...IMAGE, signal: abort.signal })
    await nthImage(orchestrator, seen, 1)
    assert.equal(orchestrator.getInfo().imagesWaiting, 1)
    abort.abort()
    await assert.rejects(second, CancelledError)
    assert.equal(firstDone, false, 'it left while the first image was still being made')
    assert.equal(orchestrator.getInfo().imagesWaiting, 0)
    await first
    await waitFor(orchestrator, ['reload', 'phase'], () => seen.reload > 0 && orchestrator.getInfo().phase === 'idle', {
      what: () => `the LLM back after the first image (phases: ${seen.phases})`,
    })
    // A window on purpose: an offload for the cancelled image would begin now.
    await new Promise((resolve) => setTimeout(resolve, 200))
    assert.deepEqual([seen.offload, seen.reload], [1, 1], 'fifo would have offloaded again for it')
    // Aborted before it was asked: nothing stops at all.
    const pid = llama.getInfo().pid
    await assert.rejects(
      orchestrator.orchestrateImageGeneration({ ...IMAGE, signal: AbortSignal.abort() }),
      CancelledError,
    )
    assert.equal(llama.getInfo().pid, pid)
    assert.equal(seen.offload, 1)
  } finally {
    await stop()
  }
})

test('starting the LLM through the orchestrator stops an idle resident sd-server that does not fit beside it; the next image starts it again', {
  skip,
}, async () => {
  const { llama, diffusion, info, stop } = await servers({ backend: 'resident' })
  try {
    await llama.stop()
    await diffusion.generateImage(IMAGE)
    assert.equal(diffusion.getInfo().backendStatus, 'running', 'resident, with its model loaded')
    const orchestrator = new ResourceOrchestrator(undefined, llama, diffusion, undefined, TIGHT)
    const seen = record(orchestrator)
    const started = await orchestrator.startLlamaServer({
      modelId: 'tiny',
      port: info.port,
      threads: 1,
      contextSize: 512,
    })
    assert.equal(started.status, 'running')
    assert.deepEqual(seen.released, ['start'])
    assert.equal(diffusion.getInfo().backendStatus, 'stopped')
    assert.equal(llama.getStartConfig().contextSize, 512, 'remembered as llamaServer.start would')
    const result = await orchestrator.orchestrateImageGeneration(IMAGE)
    assert.equal(result.width, 64)
    assert.deepEqual(seen.released, ['start', 'reload'], 'it ran again for the image, and yielded again')
    assert.equal(llama.getInfo().status, 'running')
    // A second start through the orchestrator finds it running, as llamaServer.start would.
    await assert.rejects(
      orchestrator.startLlamaServer({ modelId: 'tiny', port: info.port }),
      (e) => e instanceof ServerError && e.code === 'SERVER_ALREADY_RUNNING',
    )
  } finally {
    await stop()
  }
})

test('an image whose backend stops printing fails with BACKEND_STALLED, its process is stopped, and the LLM comes back', {
  skip,
}, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'genai-electron-stall-'))
  const fake = path.join(dir, 'sd-cli')
  fs.writeFileSync(
    fake,
    `#!/bin/sh\ncase "$1" in --version) echo 'stable-diffusion.cpp version fake'; exit 0;; esac\necho '  |==>   | 1/20 - 1.00s/it'\nsleep 600\n`,
    { mode: 0o755 },
  )
  const { llama, diffusion, info, stop } = await servers({ binaryPath: fake, stallTimeout: 500 })
  try {
    assert.equal(diffusion.getConfig().stallTimeout, 500)
    const orchestrator = new ResourceOrchestrator(undefined, llama, diffusion, undefined, TIGHT)
    const seen = record(orchestrator)
    const began = Date.now()
    const error = await orchestrator.orchestrateImageGeneration(IMAGE).then(
      () => null,
      (e) => e,
    )
    assert.ok(error instanceof ServerError, String(error))
    assert.equal(error.code, 'BACKEND_STALLED')
    assert.equal(error.details.stallTimeoutMs, 500)
    assert.ok(Date.now() - began < 15_000)
    assert.equal(seen.reload, 1)
    assert.equal(llama.getInfo().status, 'running')
    assert.notEqual(llama.getInfo().pid, info.pid)
    assert.equal((await chat(info.port)).status, 200)
    const left = fs
      .readdirSync('/proc')
      .filter((p) => /^\d+$/.test(p))
      .filter((pid) => {
        try {
          return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(fake)
        } catch {
          return false
        }
      })
    assert.deepEqual(left, [], 'the stalled process is gone')
  } finally {
    await stop()
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

test('with reloadAfterIdle the LLM stays out after the images until a chat comes, or the idle time has passed', {
  skip,
}, async () => {
  const { llama, diffusion, info, stop } = await servers()
  try {
    const orchestrator = new ResourceOrchestrator(undefined, llama, diffusion, undefined, {
      ...TIGHT,
      reloadAfterIdle: 1500,
    })
    const seen = record(orchestrator)
    await Promise.all([1, 2].map((seed) => orchestrator.orchestrateImageGeneration({ ...IMAGE, seed })))
    assert.equal(orchestrator.getInfo().phase, 'offloaded')
    assert.equal(llama.getInfo().status, 'stopped')
    // The next image finds its memory free: no offload, no reload.
    await orchestrator.orchestrateImageGeneration(IMAGE)
    assert.deepEqual([seen.offload, seen.reload], [1, 0])
    // A chat brings it back at once (not after the idle time).
    const answer = await chat(info.port)
    assert.equal(answer.status, 200)
    assert.ok(answer.waitedMs < 1500 + 10_000, `${answer.waitedMs} ms`)
    assert.equal(seen.reload, 1)
    // With no chat, it comes back on its own once the orchestrator has been idle 1.5 s.
    await orchestrator.orchestrateImageGeneration(IMAGE)
    assert.equal(orchestrator.getInfo().phase, 'offloaded')
    const idleSince = Date.now()
    await new Promise((resolve) => orchestrator.on('phase', ({ phase }) => phase === 'idle' && resolve()))
    assert.ok(Date.now() - idleSince >= 1000, 'not before the idle time')
    assert.equal(seen.reload, 2)
    assert.equal(llama.getInfo().status, 'running')
    assert.equal(llama.getInfo().port, info.port)
  } finally {
    await stop()
  }
})
