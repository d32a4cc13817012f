'use strict'

// Time to a ready llama-server, in the same run:
//   bare:   spawn llama-server by hand, poll /health every 5 ms until it answers 200;
//   ours:   llamaServer.start() from call to resolved (same binary, model and arguments);
//   0.26:   genai-electron 0.26's startLlamaServerRunner (its poll backs off from 100 ms ×1.5).
// Cases run interleaved, RUNS times, for the tiny test model and for a larger random-weights one
// (24 layers, 1024 wide, f16, ~0.7 GB: it takes a while to load); medians and ratios are printed.
// Then what llama.cpp's projection adds to a cold start (the first start of a configuration runs
// llama-fit-params once; later ones find it kept): canRunModel, which runs the same dry run, for
// a configuration not seen before against one seen. Needs `npm run backends`.
const { spawn, spawnSync } = require('node:child_process')
const fs = require('node:fs')
const http = require('node:http')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')
const { pathToFileURL } = require('node:url')
const { CACHE, backends, anchorDist, median } = require('./common')

const RUNS = Number(process.env.BENCH_RUNS ?? 5)
const ARGS = { threads: 1, contextSize: 512 }

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
  })
}

function healthy(port) {
  return new Promise((resolve) => {
    http
      .get({ host: '127.0.0.1', port, path: '/health', timeout: 200 }, (res) => {
        res.resume()
        resolve(res.statusCode === 200)
      })
      .on('error', () => resolve(false))
  })
}

async function bare(binary, model) {
  const port = await freePort()
  const start = process.hrtime.bigint()
  const child = spawn(
    binary,
    [
      '--model',
      model,
      '--host',
      '127.0.0.1',
      '--port',
      String(port),
      '--threads',
      '1',
      '--ctx-size',
      '512',
      '--n-gpu-layers',
      '0',
      '--parallel',
      '1',
      '--fit',
      'off',
    ],
    { stdio: 'ignore' },
  )
  while (!(await healthy(port))) await new Promise((r) => setTimeout(r, 5))
  const ms = Number(process.hrtime.bigint() - start) / 1e6
  const exited = new Promise((r) => child.once('exit', r))
  child.kill('SIGKILL')
  await exited
  return ms
}

/** The larger model, written once into the cache with the project's generator. */
function largeModel(real) {
  const file = path.join(CACHE, 'bench', 'llama-24l-1024d.gguf')
  if (!fs.existsSync(file)) {
    fs.mkdirSync(path.dirname(file), { recursive: true })
    const gen = spawnSync(
      real.tools.python,
      [
        path.join(__dirname, '..', 'scripts', 'make_tiny_models.py'),
        'llm',
        path.join(real.tools.vocabDir, 'ggml-vocab-llama-spm.gguf'),
        `${file}.tmp`,
        '24',
        '1024',
      ],
      { stdio: 'inherit' },
    )
    if (gen.status !== 0) throw new Error('could not write the larger model')
    fs.renameSync(`${file}.tmp`, file)
  }
  return file
}

async function register(lib, id, file) {
  const server = http.createServer((_req, res) => fs.createReadStream(file).pipe(res)).listen(0, '127.0.0.1')
  await new Promise((r) => server.once('listening', r))
  await lib.modelManager.downloadModel({
    source: 'url',
    url: `http://127.0.0.1:${server.address().port}/m.gguf`,
    name: id,
    type: 'llm',
  })
  server.close()
  return (await lib.modelManager.getModelInfo(id)).path
}

async function ours(lib, modelId) {
  const start = process.hrtime.bigint()
  await lib.llamaServer.start({ modelId, port: 'auto', ...ARGS })
  const ms = Number(process.hrtime.bigint() - start) / 1e6
  await lib.llamaServer.stop()
  return ms
}

async function anchor(startRunner, binary, model) {
  const start = process.hrtime.bigint()
  const handle = await startRunner({
    binaryPath: binary,
    model: { path: model },
    config: { threads: 1, gpuLayers: 0 },
    contextSize: 512,
    parallelRequests: 1,
    startupTimeoutMs: 60_000,
  })
  const ms = Number(process.hrtime.bigint() - start) / 1e6
  await handle.stop()
  return ms
}

async function main() {
  const real = backends()
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'genai-electron-bench-'))
  const lib = require('..')
  lib.configure({ dataDir: work })
  process.env.GENAI_ELECTRON_LLAMA_SERVER = real.llamaServer
  const models = {
    tiny: await register(lib, 'tiny', real.llmModel),
    larger: await register(lib, 'larger', largeModel(real)),
  }

  let startRunner = null
  try {
    ;({ startLlamaServerRunner: startRunner } = await import(
      pathToFileURL(path.join(anchorDist(), 'llama-server-launch.js'))
    ))
  } catch (err) {
    console.error(`genai-electron 0.26 not measured: ${err.message}`)
  }
  for (const [modelId, model] of Object.entries(models)) {
    const times = { bare: [], ours: [], anchor: [] }
    for (let i = 0; i < RUNS; i++) {
      times.bare.push(await bare(real.llamaServer, model))
      times.ours.push(await ours(lib, modelId))
      if (startRunner) {
        try {
          times.anchor.push(await anchor(startRunner, real.llamaServer, model))
        } catch (err) {
          console.error(`genai-electron 0.26 failed: ${err.message}`)
          startRunner = null
        }
      }
    }
    report(modelId, fs.statSync(model).size, times)
    await reportProjection(lib, modelId, median(times.ours))
  }
  fs.rmSync(work, { recursive: true, force: true })
}

/** The dry run's cost: a configuration never projected (a new context each run) against a kept one. */
async function reportProjection(lib, modelId, startMs) {
  const info = await lib.modelManager.getModelInfo(modelId)
  const timed = async (contextSize) => {
    const start = process.hrtime.bigint()
    const { estimate } = await lib.systemInfo.canRunModel(info, { contextSize, gpuLayers: 0 })
    if (estimate.source !== 'projected') throw new Error('llama-fit-params is not beside llama-server')
    return Number(process.hrtime.bigint() - start) / 1e6
  }
  const fresh = []
  const kept = []
  for (let i = 0; i < RUNS; i++) {
    fresh.push(await timed(1024 + 256 * i))
    kept.push(await timed(1024 + 256 * i))
  }
  const added = median(fresh) - median(kept)
  console.log(
    `llama.cpp's projection: ${median(fresh).toFixed(1)} ms for a new configuration, ${median(kept).toFixed(1)} ms kept: ` +
      `a cold start takes ${added.toFixed(1)} ms more (${((added / startMs) * 100).toFixed(1)}% of the start above)`,
  )
}

function report(modelId, bytes, times) {
  const b = median(times.bare)
  const o = median(times.ours)
  console.log(
    `\ntime to a healthy llama-server, ${modelId} model (${(bytes / 2 ** 20).toFixed(0)} MiB), median of ${RUNS}, interleaved (node ${process.version})`,
  )
  const rows = {
    'bare spawn, /health polled every 5 ms': { ms: b.toFixed(1), 'ratio to bare': '1.00' },
    'llamaServer.start()': { ms: o.toFixed(1), 'ratio to bare': (o / b).toFixed(2) },
  }
  let line = `ours: ${(o / b).toFixed(2)}× bare (goal ≤ 1.05)`
  if (times.anchor.length) {
    const a = median(times.anchor)
    rows['genai-electron 0.26 startLlamaServerRunner'] = { ms: a.toFixed(1), 'ratio to bare': (a / b).toFixed(2) }
    line += `; ${(a / o).toFixed(2)}× faster than genai-electron 0.26`
  }
  console.table(rows)
  console.log(line)
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
