'use strict'

const { spawn } = require('node:child_process')
const fs = require('node:fs')
const http = require('node:http')
const path = require('node:path')

const ROOT = path.resolve(__dirname, '..')

/** Runs a Node script in a child process (fresh module state), resolving with its outcome. */
function runNode(source, { env = {}, args = [], timeoutMs = 30_000 } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...args, '-e', source], {
      cwd: ROOT,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => (stdout += d))
    child.stderr.on('data', (d) => (stderr += d))
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`child timed out after ${timeoutMs} ms\n${stderr}`))
    }, timeoutMs)
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, stdout, stderr })
    })
  })
}

module.exports = { ROOT, runNode }

/**
 * The real backends and tiny models (`npm run backends`): `npm test` builds them and passes
 * their JSON through GENAI_ELECTRON_TEST_BACKENDS. Returns null, with the reason, without them.
 */
function backends() {
  const file = process.env.GENAI_ELECTRON_TEST_BACKENDS
  if (!file)
    return {
      skip: 'real backends not provided: run `npm test` (or set GENAI_ELECTRON_TEST_BACKENDS to the JSON file `npm run backends` prints)',
    }
  return { paths: JSON.parse(require('node:fs').readFileSync(file, 'utf8')) }
}

module.exports.backends = backends

/** Serves local files (`{ '/name': path }`) on 127.0.0.1 while `use(baseUrl)` runs. */
async function serveFiles(files, use) {
  const server = http.createServer((req, res) => fs.createReadStream(files[req.url]).pipe(res))
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  try {
    return await use(`http://127.0.0.1:${server.address().port}`)
  } finally {
    server.close()
  }
}

/** Registers the tiny diffusion set of `npm run backends` as one multi-component model. */
function downloadTinyImageSet(modelManager, real, name = 'tiny-image') {
  const files = {
    '/diffusion.gguf': real.diffusionModel,
    '/llm.gguf': real.diffusionComponents.llm,
    '/taesd.gguf': real.diffusionComponents.taesd,
  }
  return serveFiles(files, (base) =>
    modelManager.downloadModel({
      source: 'url',
      url: `${base}/diffusion.gguf`,
      name,
      type: 'diffusion',
      components: [
        { role: 'llm', source: 'url', url: `${base}/llm.gguf` },
        { role: 'taesd', source: 'url', url: `${base}/taesd.gguf` },
      ],
    }),
  )
}

module.exports.serveFiles = serveFiles
module.exports.downloadTinyImageSet = downloadTinyImageSet

/**
 * A fresh data folder (configured) with the tiny llm of `npm run backends` registered as `tiny`,
 * and the real llama-server chosen through its environment variable. Resolves with the folder.
 */
async function withTinyModel(real) {
  const { ModelManager, configure } = require('..')
  const dataDir = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'genai-electron-llama-'))
  configure({ dataDir })
  process.env.GENAI_ELECTRON_LLAMA_SERVER = real.llamaServer
  await serveFiles({ '/tiny.gguf': real.llmModel }, (base) =>
    new ModelManager().downloadModel({ source: 'url', url: `${base}/tiny.gguf`, name: 'tiny', type: 'llm' }),
  )
  return dataDir
}

module.exports.withTinyModel = withTinyModel

/**
 * The tiny llm running behind its gateway and the tiny image set on a diffusion server (one-shot
 * unless `diffusionConfig` says otherwise), in a fresh data folder; `stop()` stops both.
 */
async function startTinyServers(real, diffusionConfig = {}) {
  const { LlamaServerManager, DiffusionServerManager, ModelManager } = require('..')
  await withTinyModel(real)
  process.env.GENAI_ELECTRON_SD_CLI = real.sdCli
  process.env.GENAI_ELECTRON_SD_SERVER = real.sdServer
  await downloadTinyImageSet(new ModelManager(), real)
  const llama = new LlamaServerManager()
  const diffusion = new DiffusionServerManager()
  const info = await llama.start({ modelId: 'tiny', port: 'auto', threads: 1, contextSize: 512 })
  await diffusion.start({ modelId: 'tiny-image', backend: 'one-shot', port: 'auto', threads: 1, ...diffusionConfig })
  const stop = () => Promise.all([llama.stop(), diffusion.stop()])
  return { llama, diffusion, info, stop }
}

module.exports.startTinyServers = startTinyServers

/**
 * Resolves with `predicate(...args)` once it is truthy, checking it now and after every one of
 * `events` on `emitter` (one or an array: a manager's events, a child's stdout 'data'): tests
 * wait for the signal that the state changed, never for a guessed number of milliseconds. Rejects
 * after `timeout` ms, naming `what` (a string, or a function called then for the latest state).
 * Its listeners go last, so state that earlier listeners record is up to date when it checks.
 */
function waitFor(emitter, events, predicate, { timeout = 30_000, what = 'the condition' } = {}) {
  const emitters = [].concat(emitter)
  const types = [].concat(events)
  return new Promise((resolve, reject) => {
    const done = (settle, value) => {
      clearTimeout(timer)
      for (const e of emitters) for (const type of types) e.off(type, check)
      settle(value)
    }
    function check(...args) {
      let value
      try {
        value = predicate(...args)
      } catch (err) {
        return done(reject, err)
      }
      if (value) done(resolve, value)
    }
    const timer = setTimeout(() => {
      const waited = typeof what === 'function' ? what() : what
      done(reject, new Error(`timed out after ${timeout} ms waiting for ${waited} (on ${types.join(', ')})`))
    }, timeout)
    for (const e of emitters) for (const type of types) e.on(type, check)
    check()
  })
}

/**
 * The payload of the next `type` event on `emitter`. Call it before the action that causes the
 * event, and await it after: `const queued = nextEvent(server, 'queued'); send(); await queued`.
 */
async function nextEvent(emitter, type, { timeout = 30_000, what = `a '${type}' event` } = {}) {
  const [event] = await waitFor(emitter, type, (...args) => args.length > 0 && args, { timeout, what })
  return event
}

module.exports.waitFor = waitFor
module.exports.nextEvent = nextEvent

/** What a 1 ms-resolution event-loop delay histogram saw, in ms. */
function delaySummary(histogram) {
  return { max: histogram.max / 1e6, p99: histogram.percentile(99) / 1e6 }
}

/**
 * The event loop's delay while `work()` runs: `{ value, max, p99, ms }`, `value` what `work`
 * resolved with, `max` and `p99` the loop's delays in ms, `ms` how long `work` took.
 */
async function loopDelay(work) {
  const { monitorEventLoopDelay, performance } = require('node:perf_hooks')
  const histogram = monitorEventLoopDelay({ resolution: 1 })
  const began = performance.now()
  histogram.enable()
  let value
  try {
    value = await work()
  } finally {
    histogram.disable()
  }
  return { value, ...delaySummary(histogram), ms: performance.now() - began }
}

/**
 * The event loop's delay over `ms` (at least 100) of plain JS timer activity and no library
 * work: a timer every millisecond that builds and serialises an event-sized object, as a
 * listener would. Measured in the same process and run as the work it is compared with, it
 * says what this machine's load costs the loop right now.
 */
async function baselineDelay(ms) {
  const period = Math.max(ms, 100)
  const {
    max,
    p99,
    ms: took,
  } = await loopDelay(
    () =>
      new Promise((resolve) => {
        let sink = 0
        const tick = setInterval(() => {
          const event = { type: 'progress', downloaded: sink, total: period, at: Date.now() }
          sink += JSON.parse(JSON.stringify(event)).type.length
        }, 1)
        setTimeout(() => {
          clearInterval(tick)
          resolve(sink)
        }, period)
      }),
  )
  return { max, p99, ms: took }
}

/**
 * Asserts that the library left the JS thread free while `work()` ran: its worst event-loop delay
 * is at most 3× the worst of an equally long baseline (`baselineDelay`) measured right after,
 * plus 50 ms. That margin absorbs a loaded machine (the baseline grows with the load), yet a call
 * that held the thread for 200 ms still fails whenever the baseline's worst is under 50 ms, i.e.
 * on any machine that does not itself stall the process that long. Both figures go to the test's
 * diagnostics (`t`) and into the failure message. Resolves with what `work` resolved with.
 */
async function assertLoopFree(work, { t, what }) {
  const assert = require('node:assert/strict')
  const { value, ...library } = await loopDelay(work)
  const baseline = await baselineDelay(library.ms)
  const limit = baseline.max * 3 + 50
  const ms = (n) => `${n.toFixed(1)} ms`
  const figures =
    `${what}: event-loop delay max ${ms(library.max)} (p99 ${ms(library.p99)}) over ${ms(library.ms)}; ` +
    `baseline max ${ms(baseline.max)} (p99 ${ms(baseline.p99)}) over ${ms(baseline.ms)}; limit ${ms(limit)}`
  t?.diagnostic(figures)
  assert.ok(library.max <= limit, `the event loop was blocked: ${figures}`)
  return value
}

module.exports.loopDelay = loopDelay
module.exports.baselineDelay = baselineDelay
module.exports.assertLoopFree = assertLoopFree

/**
 * llama.cpp's buffers on `device` in its log (at `--log-verbosity 4`, the library's), in bytes: `model`, `kv`,
 * `compute` (each summed over its lines), from lines such as
 * `load_tensors:      Vulkan0 model buffer size =    92.10 MiB`.
 */
function deviceBuffers(lines, device = 'Vulkan0') {
  const found = { model: 0, kv: 0, compute: 0 }
  const pattern = new RegExp(`\\s${device} (model|KV|compute) buffer size =\\s*([\\d.]+) MiB`)
  for (const line of lines) {
    const m = pattern.exec(line)
    if (m) found[m[1].toLowerCase()] += Number(m[2]) * 2 ** 20
  }
  return found
}

module.exports.deviceBuffers = deviceBuffers

/**
 * A `size`-pixel square PNG of one colour, written with zlib: `color` has 1 (grey), 3 (RGB) or
 * 4 (RGBA) 8-bit samples (default mid-grey RGB).
 */
function png(size, color = [0x80, 0x80, 0x80]) {
  const zlib = require('node:zlib')
  const chunk = (type, data) => {
    const body = Buffer.concat([Buffer.from(type), data])
    const length = Buffer.alloc(4)
    length.writeUInt32BE(data.length)
    const crc = Buffer.alloc(4)
    crc.writeUInt32BE(zlib.crc32(body))
    return Buffer.concat([length, body, crc])
  }
  const header = Buffer.alloc(13)
  header.writeUInt32BE(size, 0)
  header.writeUInt32BE(size, 4)
  const colorType = { 1: 0, 3: 2, 4: 6 }[color.length]
  header.set([8, colorType, 0, 0, 0], 8)
  const pixel = Buffer.from(color)
  const row = Buffer.concat([Buffer.from([0]), ...Array.from({ length: size }, () => pixel)])
  const pixels = zlib.deflateSync(Buffer.concat(Array.from({ length: size }, () => row)))
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])
  return Buffer.concat([signature, chunk('IHDR', header), chunk('IDAT', pixels), chunk('IEND', Buffer.alloc(0))])
}
module.exports.png = png

/**
 * The pixels of `png` as its scanlines (inflated IDAT): equal for two PNGs of the same encoder
 * exactly when their pixels are (a row's filter is chosen from its pixels, and undone exactly).
 */
function pngScanlines(png) {
  const parts = []
  for (let at = 8; at < png.length; ) {
    const length = png.readUInt32BE(at)
    if (png.toString('latin1', at + 4, at + 8) === 'IDAT') parts.push(png.subarray(at + 8, at + 8 + length))
    at += 12 + length
  }
  return require('node:zlib').inflateSync(Buffer.concat(parts))
}
module.exports.pngScanlines = pngScanlines

/** Whether process `pid` runs (a zombie, exited and not yet reaped, does not). Linux: /proc. */
function alive(pid) {
  const stat = fs.existsSync(`/proc/${pid}/stat`) ? fs.readFileSync(`/proc/${pid}/stat`, 'utf8') : ''
  return stat !== '' && stat.split(') ')[1]?.[0] !== 'Z'
}
module.exports.alive = alive
