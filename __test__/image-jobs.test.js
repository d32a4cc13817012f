'use strict'

// Our image HTTP API as genai-electron 0.26's clients call it: genai-lite's
// `genai-electron-images` provider (POST without `async`, then a poll of the job every 500 ms until
// `complete`, reading `result.images`, `progress.percentage` and `error.{message,code}`), and a
// client that asks for the job at once to show progress. Against the real backends.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { backends, downloadTinyImageSet } = require('./helpers')
const { DiffusionServerManager, ModelManager, configure } = require('..')

const { paths: real, skip } = backends()

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** The provider's calls: start a generation, take its id, poll until it ends. */
async function generateAsGenaiLite(base, payload, { headers = {}, pollMs = 500, onProgress } = {}) {
  const started = await fetch(`${base}/v1/images/generations`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...headers },
    body: JSON.stringify(payload),
  })
  if (!started.ok) throw httpError(started.status, await started.text())
  const { id } = await started.json()
  for (;;) {
    const response = await fetch(`${base}/v1/images/generations/${id}`)
    if (!response.ok) throw httpError(response.status, await response.text())
    const state = await response.json()
    if (state.status === 'in_progress' && state.progress && onProgress) onProgress(state.progress)
    if (state.status === 'complete') return { id, result: state.result }
    if (state.status === 'error') throw Object.assign(new Error(state.error.message), { code: state.error.code })
    await sleep(pollMs)
  }
}

/** How the provider reads an HTTP error: `error.message` of a JSON body. */
function httpError(status, text) {
  const message = JSON.parse(text).error?.message
  assert.ok(message, `a nested error message: ${text}`)
  return Object.assign(new Error(message), { status, body: JSON.parse(text) })
}

function isPng(base64, [width, height]) {
  const png = Buffer.from(base64, 'base64')
  return png.subarray(1, 4).toString() === 'PNG' && png.readUInt32BE(16) === width && png.readUInt32BE(20) === height
}

test("genai-lite's image provider gets its images, progress, cancel and errors", { skip }, async () => {
  configure({ dataDir: fs.mkdtempSync(path.join(os.tmpdir(), 'genai-electron-jobs-')) })
  process.env.GENAI_ELECTRON_SD_SERVER = real.sdServer
  await downloadTinyImageSet(new ModelManager(), real)
  const server = new DiffusionServerManager()
  const { port } = await server.start({ modelId: 'tiny-image', backend: 'resident', port: 'auto', threads: 1 })
  const base = `http://localhost:${port}`
  try {
    // Unchanged: the provider's payload, with no `async`. The POST answers once the images are
    // made, with the job's id; the job stays pollable and is found complete.
    const payload = {
      prompt: 'a red cube',
      width: 64,
      height: 64,
      steps: 2,
      cfgScale: 1,
      seed: 3,
      sampler: 'euler_a',
      count: 2,
    }
    const { result } = await generateAsGenaiLite(base, payload)
    assert.equal(result.format, 'png')
    assert.equal(typeof result.timeTaken, 'number')
    assert.deepEqual(
      result.images.map((i) => [i.seed, i.width, i.height]),
      [
        [3, 64, 64],
        [4, 64, 64],
      ],
    )
    assert.ok(result.images.every((i) => isPng(i.image, [64, 64])))

    // A client that wants progress asks for the job at once (RFC 7240), then polls it.
    const seen = []
    const started = Date.now()
    const slow = { ...payload, steps: 40, count: 1 }
    const { id } = await generateAsGenaiLite(base, slow, {
      headers: { Prefer: 'respond-async' },
      pollMs: 50,
      onProgress: (p) => seen.push(p),
    })
    assert.ok(seen.length > 1, `progress was seen while it ran (${seen.length} polls, ${Date.now() - started} ms)`)
    for (const p of seen) {
      assert.ok(['loading', 'diffusion', 'decoding'].includes(p.stage), JSON.stringify(p))
      assert.ok(p.percentage >= 0 && p.percentage <= 100 && p.totalSteps > 0, JSON.stringify(p))
    }
    const percentages = seen.map((p) => p.percentage)
    assert.deepEqual(
      percentages,
      [...percentages].sort((a, b) => a - b),
      'never backwards',
    )
    const done = await (await fetch(`${base}/v1/images/generations/${id}`)).json()
    assert.deepEqual([done.status, done.progress.percentage], ['complete', 100])
    assert.ok(done.updatedAt >= done.createdAt && done.createdAt >= started - 1000)

    // The 202 answer, and a cancel by DELETE of the running job.
    const accepted = await fetch(`${base}/v1/images/generations`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Prefer: 'respond-async' },
      body: JSON.stringify({ ...slow, steps: 150 }),
    })
    assert.equal(accepted.status, 202)
    assert.equal(accepted.headers.get('preference-applied'), 'respond-async')
    const job = await accepted.json()
    assert.equal(job.status, 'pending')
    assert.equal(accepted.headers.get('location'), job.url)
    while ((await (await fetch(`${base}${job.url}`)).json()).status !== 'in_progress') await sleep(20)
    const cancelled = await fetch(`${base}${job.url}`, { method: 'DELETE' })
    assert.deepEqual([cancelled.status, (await cancelled.json()).status], [200, 'cancelled'])
    assert.equal((await (await fetch(`${base}${job.url}`)).json()).status, 'cancelled')
    const again = await fetch(`${base}${job.url}`, { method: 'DELETE' })
    assert.deepEqual([again.status, (await again.json()).error.code], [409, 'ALREADY_TERMINAL'])

    // The newer fields through the async door: an init image, its mask, a reference and a hires
    // pass, as base64 in the JSON body; the job's result has the hires size.
    const { png } = require('./helpers')
    const b64 = (image) => image.toString('base64')
    const edit = await fetch(`${base}/v1/images/generations`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({
        ...payload,
        count: 1,
        async: true,
        initImage: b64(png(64, [200, 30, 30])),
        mask: b64(png(64, [255])),
        referenceImages: [b64(png(32))],
        hires: { scale: 2, steps: 2 },
      }),
    })
    assert.equal(edit.status, 202)
    const editJob = await edit.json()
    const poll = async () => (await fetch(`${base}${editJob.url}`)).json()
    let edited = await poll()
    while (edited.status !== 'complete') {
      assert.notEqual(edited.status, 'error', JSON.stringify(edited.error))
      await sleep(50)
      edited = await poll()
    }
    assert.ok(isPng(edited.result.images[0].image, [128, 128]))

    // Errors are nested, with the code the provider branches on.
    const refused = await generateAsGenaiLite(base, { ...payload, width: 100 }).catch((e) => e)
    assert.equal(refused.status, 400)
    assert.match(refused.message, /width must be a multiple of 8/)
    assert.deepEqual([refused.body.error.code, refused.body.error.type], ['INVALID_REQUEST', 'invalid_request_error'])
    const missing = await fetch(`${base}/v1/images/generations/undefined`)
    assert.deepEqual([missing.status, (await missing.json()).error.code], [404, 'NOT_FOUND'])
  } finally {
    await server.stop()
  }
})
