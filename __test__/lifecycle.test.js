'use strict'

// The one server lifecycle under llamaServer and diffusionServer: `state` events, cancelling a
// start, restarts, the keep-alive, memory, and builds that end with the app.

const test = require('node:test')
const assert = require('node:assert/strict')
const crypto = require('node:crypto')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { spawn, spawnSync } = require('node:child_process')
const { backends, withTinyModel, downloadTinyImageSet, ROOT, waitFor } = require('./helpers')
const {
  LlamaServerManager,
  DiffusionServerManager,
  ModelManager,
  configure,
  CancelledError,
  LogManager,
} = require('..')

const { paths: real, skip } = backends()

function tmp() {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'genai-electron-life-'))
}

function record(manager, types) {
  const seen = []
  for (const type of types) manager.on(type, (e) => seen.push(e.old ? `${e.old}→${e.new}` : type))
  return seen
}

/**
 * Waits until `check()` is true, polling every 10 ms, for at most `ms`. Only for what no event
 * announces (processes in /proc): what the library signals is awaited with `waitFor`.
 */
async function until(check, ms, what) {
  const deadline = Date.now() + ms
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 10))
  }
}

function gone(pid) {
  const stat = fs.existsSync(`/proc/${pid}/stat`) ? fs.readFileSync(`/proc/${pid}/stat`, 'utf8') : ''
  return stat === '' || stat.split(' ')[2] === 'Z'
}

test('a start then a stop emits exactly four state events; restart() goes through restarting', { skip }, async () => {
  const dataDir = await withTinyModel(real)
  const server = new LlamaServerManager()
  const seen = record(server, ['state', 'restarted'])
  const info = await server.start({ modelId: 'tiny', port: 'auto', threads: 1, contextSize: 512 })
  assert.equal(info.health, 'ok')
  await server.stop()
  assert.equal(server.getInfo().health, 'unknown')
  await waitFor(server, 'state', () => seen.length === 4, { timeout: 2000, what: 'four state events' })
  assert.deepEqual(seen, ['stopped→starting', 'starting→running', 'running→stopping', 'stopping→stopped'])

  seen.length = 0
  assert.equal(new LlamaServerManager().getStartConfig(), null)
  assert.equal(server.getStartConfig().contextSize, 512)
  server.getStartConfig().contextSize = 1
  await assert.rejects(server.start({ modelId: 'missing' }))
  assert.deepEqual(
    server.getStartConfig(),
    { modelId: 'tiny', port: 'auto', threads: 1, contextSize: 512 },
    'a copy, kept by a failed start',
  )
  // The request as it was accepted: it starts the same server again.
  const started = await server.start(server.getStartConfig())
  const again = await server.restart()
  assert.equal(again.port, started.port)
  assert.notEqual(again.pid, started.pid)
  assert.equal(again.modelId, 'tiny')
  const usage = await server.getMemoryUsage()
  assert.deepEqual(usage.pids, [again.pid])
  assert.ok(usage.rssBytes > 1 << 20, JSON.stringify(usage))
  await server.stop()
  assert.equal(await server.getMemoryUsage(), null)
  await waitFor(server, ['state', 'restarted'], () => seen.length === 8, { timeout: 2000, what: 'the restart cycle' })
  assert.deepEqual(seen, [
    'stopped→starting',
    'starting→running',
    'running→stopping',
    'stopping→restarting',
    'restarting→running',
    'restarted',
    'running→stopping',
    'stopping→stopped',
  ])
  const lines = await server.getLogs(500)
  // Every line, llama-server's own output included, has a time and a level.
  assert.deepEqual(
    lines.filter((l) => !LogManager.parseEntry(l)),
    [],
  )
  const logs = lines.join('\n')
  assert.match(logs, /\] \[INFO\] starting llama-server on port \d+/)
  assert.match(logs, /\] \[INFO\] restarting llama-server on port/)
  // The library's lines go to the log file too, beside the server's own output.
  const file = fs.readFileSync(path.join(dataDir, 'logs', 'llama-server.log'), 'utf8')
  assert.match(file, /\] \[INFO\] stopping llama-server \(stop\(\)\)/)
  assert.ok(info.port > 0)
})

test('stop() during a start that never gets ready cancels it within a second', { skip }, async () => {
  const dir = await withTinyModel(real)
  // A llama-server that passes its probe, says its pid (exec keeps it), and never answers /health.
  const fake = path.join(dir, 'llama-server')
  fs.writeFileSync(
    fake,
    '#!/bin/sh\n[ "$1" = --version ] && { echo "version: 1 (fake)"; exit 0; }\necho "loading $$"; exec sleep 60\n',
    { mode: 0o755 },
  )
  const server = new LlamaServerManager()
  const seen = record(server, ['state'])
  // Its line, a 'log' event, says it was spawned.
  const spawned = waitFor(server, 'log', (e) => Number(/loading (\d+)/.exec(e?.line)?.[1]), {
    timeout: 5000,
    what: 'the fake to be spawned',
  })
  const starting = server.start({ modelId: 'tiny', port: 'auto', threads: 1, contextSize: 512, binaryPath: fake })
  const outcome = starting.then(
    () => null,
    (err) => err,
  )
  const pid = await spawned
  const began = Date.now()
  await server.stop()
  const took = Date.now() - began
  const err = await outcome
  assert.ok(err instanceof CancelledError && err.code === 'CANCELLED', String(err))
  assert.ok(took < 1000, `stop() took ${took} ms`)
  await until(() => gone(pid), 500, 'the fake to be gone')
  await waitFor(server, 'state', () => seen.length === 3, { timeout: 1000, what: 'three state events' })
  assert.deepEqual(seen, ['stopped→starting', 'starting→stopping', 'stopping→stopped'])
  assert.equal(server.getInfo().status, 'stopped')
})

test('the keep-alive follows the state: a crash with restarts pending holds Node, one without lets it go', {
  skip,
}, async () => {
  const dataDir = await withTinyModel(real)
  const script = (autoRestart) => `
    const { llamaServer, configure } = require(${JSON.stringify(ROOT)})
    configure({ dataDir: ${JSON.stringify(dataDir)} })
    llamaServer.on('state', (e) => console.log('state', e.old, e.new, e.willRestart))
    llamaServer.on('restarted', () => { console.log('restarted'); llamaServer.stop() })
    llamaServer.start({ modelId: 'tiny', port: 'auto', threads: 1, contextSize: 512, autoRestart: ${autoRestart} })
      .then((i) => console.log('pid', i.pid))`
  for (const autoRestart of [true, false]) {
    const child = spawn(process.execPath, ['-e', script(autoRestart)], {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, GENAI_ELECTRON_LLAMA_SERVER: real.llamaServer },
    })
    let out = ''
    child.stdout.on('data', (d) => (out += d))
    const exited = new Promise((resolve) => child.on('exit', resolve))
    await waitFor(child.stdout, 'data', () => /pid (\d+)/.test(out), { timeout: 10000, what: 'the server to start' })
    process.kill(Number(/pid (\d+)/.exec(out)[1]), 'SIGKILL')
    const timer = setTimeout(() => child.kill('SIGKILL'), 15000)
    assert.equal(await exited, 0, out)
    clearTimeout(timer)
    if (autoRestart) {
      // Node stayed alive through crashed → restarting → running, then exited after the stop.
      assert.match(out, /state running crashed true/)
      assert.match(out, /restarted/)
      assert.match(out, /state stopping stopped/)
    } else {
      // Nothing holds Node after a crash without restarts: it exits by itself.
      assert.match(out, /state running crashed false/)
      assert.doesNotMatch(out, /restarted/)
    }
  }
})

test('a killed resident sd-server is reported as crashed, and the next image starts it again', { skip }, async () => {
  configure({ dataDir: tmp() })
  process.env.GENAI_ELECTRON_SD_SERVER = real.sdServer
  await downloadTinyImageSet(new ModelManager(), real)
  const server = new DiffusionServerManager()
  const backend = record(server, ['backend-state'])
  const own = record(server, ['state'])
  await server.start({ modelId: 'tiny-image', backend: 'resident', port: 'auto', threads: 1 })
  try {
    const image = { prompt: 'a red cube', width: 64, height: 64, steps: 2, cfgScale: 1, seed: 1 }
    await server.generateImage(image)
    const { pid, backendStatus, backendPort, health } = server.getInfo()
    assert.equal(backendStatus, 'running')
    assert.equal(health, 'ok')
    assert.ok(backendPort > 0)
    assert.ok((await server.getMemoryUsage()).rssBytes > 1 << 20)
    const crashed = new Promise((resolve) => server.once('crashed', resolve))
    process.kill(pid, 'SIGKILL')
    const event = await crashed
    assert.equal(event.signal, 9)
    assert.equal(event.backend, 'sd-server')
    assert.ok(event.logs.length > 0)
    // As the seed's panel shows it: crashed, unhealthy, no process; the port still answers.
    const after = server.getInfo()
    assert.deepEqual(
      [after.backendStatus, after.status, after.health, after.pid],
      ['crashed', 'crashed', 'error', null],
    )
    assert.match(after.error, /sd-server/)
    assert.equal(await server.isHealthy(), true)
    const next = await server.generateImage(image)
    assert.equal(next.image.length > 0, true)
    assert.notEqual(server.getInfo().pid, pid)
    assert.deepEqual([server.getInfo().status, server.getInfo().health], ['running', 'ok'])
  } finally {
    await server.stop()
  }
  await waitFor(server, 'state', () => own.length === 6, { timeout: 2000, what: 'the server state events' })
  assert.deepEqual(own, [
    'stopped→starting',
    'starting→running',
    'running→crashed',
    'crashed→running',
    'running→stopping',
    'stopping→stopped',
  ])
  assert.deepEqual(backend, [
    'stopped→starting',
    'starting→running',
    'running→crashed',
    'crashed→starting',
    'starting→running',
    'running→stopping',
    'stopping→stopped',
  ])
})

/** Processes whose command line contains `marker`. */
function processesWith(marker) {
  return fs
    .readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .filter((pid) => {
      try {
        return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(marker) && !gone(pid)
      } catch {
        return false
      }
    })
}

test('a build ends with the app, killed or exiting: no cmake, ninja or job is left behind', async (t) => {
  const hasTools = ['cmake', 'ninja'].every((tool) => spawnSync(tool, ['--version']).status === 0)
  if (!hasTools) {
    assert.ok(!process.env.GENAI_ELECTRON_REQUIRE_CMAKE, 'cmake and ninja are not on PATH')
    return t.skip('cmake and ninja are not on PATH (npm test provides them)')
  }
  for (const how of ['SIGKILL', 'process.exit']) {
    const dir = tmp()
    // A project whose one target runs a long job, as ninja runs a compiler: in a process group
    // of its own, so only ninja (told by SIGTERM) can end it.
    const marker = `${900 + crypto.randomInt(99)}.${crypto.randomInt(1e6)}`
    fs.mkdirSync(path.join(dir, 'proj-1.0'))
    fs.writeFileSync(
      path.join(dir, 'proj-1.0', 'CMakeLists.txt'),
      `cmake_minimum_required(VERSION 3.14)\nproject(slow NONE)\nadd_custom_target(llama-server ALL COMMAND sleep ${marker})\n`,
    )
    const archive = path.join(dir, 'proj-1.0.tar.gz')
    assert.equal(spawnSync('tar', ['-czf', archive, '-C', dir, 'proj-1.0']).status, 0)
    const sha256 = crypto.createHash('sha256').update(fs.readFileSync(archive)).digest('hex')
    const workDir = path.join(dir, 'work')
    // The app quits when told to on stdin (its exit hook ends the library's children).
    const script = `
      const { binaries, configure } = require(${JSON.stringify(ROOT)})
      configure({ dataDir: ${JSON.stringify(path.join(dir, 'data'))} })
      process.stdin.once('data', () => process.exit(0))
      binaries.buildFromSource('llama-server', { archive: ${JSON.stringify(archive)}, sha256: '${sha256}', jobs: 1 }, { workDir: ${JSON.stringify(workDir)} })`
    const app = spawn(process.execPath, ['-e', script], { stdio: ['pipe', 'ignore', 'ignore'] })
    await until(() => processesWith(`sleep ${marker}`).length > 0, 60000, 'the build job to run')
    const tree = [...processesWith(workDir), ...processesWith(`sleep ${marker}`)]
    assert.ok(tree.length >= 3, `cmake, ninja and the job: ${tree}`)
    if (how === 'SIGKILL') app.kill('SIGKILL')
    else app.stdin.write('quit\n')
    await until(
      () => processesWith(workDir).length === 0 && processesWith(`sleep ${marker}`).length === 0,
      5000,
      `the build's processes to end after ${how} (${tree})`,
    )
  }
})

test('a failed automatic restart sequence ends crashed + restart-failed, never stopped in between', {
  skip,
}, async () => {
  await withTinyModel(real)
  const server = new LlamaServerManager()
  const seen = record(server, ['state', 'crashed', 'restart-failed', 'stopped', 'restarted'])
  const info = await server.start({
    modelId: 'tiny',
    port: 'auto',
    threads: 1,
    contextSize: 512,
    autoRestart: true,
    maxRestarts: 2,
  })
  const { path: modelPath } = await new ModelManager().getModelInfo('tiny')
  fs.writeFileSync(modelPath, Buffer.alloc(fs.statSync(modelPath).size))
  process.kill(info.pid, 'SIGKILL')
  await waitFor(server, 'restart-failed', () => seen.includes('restart-failed'), {
    timeout: 15000,
    what: 'restart-failed',
  })
  assert.deepEqual(seen, [
    'stopped→starting',
    'starting→running',
    'running→crashed',
    'crashed',
    'crashed→restarting',
    'restarting→crashed',
    'crashed→restarting',
    'restarting→crashed',
    'restart-failed',
  ])
  assert.equal(server.getInfo().status, 'crashed')
  await server.stop()
})
