'use strict'

// Download throughput: a 1 GiB GGUF-headed file from a local server, fetched by
//   curl (no checksum), ours (modelManager.downloadModel with its sha256 checked while streaming),
//   and genai-electron 0.26's Downloader (then its calculateSHA256, as its ModelManager does),
// in the same run, each RUNS times interleaved; medians and ratios are printed.
const { spawn, spawnSync } = require('node:child_process')
const crypto = require('node:crypto')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { pathToFileURL } = require('node:url')
const { anchorDist, median } = require('./common')

const SIZE = Number(process.env.BENCH_BYTES ?? 1 << 30)
const RUNS = Number(process.env.BENCH_RUNS ?? 3)
// BENCH_RATE=100 paces the server at 100 MiB/s, like a fast real link; unset, loopback runs flat out.
const RATE = Number(process.env.BENCH_RATE ?? 0)

function makeSource(file) {
  const out = fs.openSync(file, 'w')
  const header = Buffer.alloc(32)
  header.write('GGUF', 0)
  header.writeUInt32LE(3, 4) // version 3, no tensors, no keys
  fs.writeSync(out, header)
  const chunk = crypto.randomBytes(1 << 20)
  const hash = crypto.createHash('sha256').update(header)
  for (let written = header.length; written < SIZE; written += chunk.length) {
    const piece = chunk.subarray(0, Math.min(chunk.length, SIZE - written))
    fs.writeSync(out, piece)
    hash.update(piece)
  }
  fs.closeSync(out)
  return hash.digest('hex')
}

async function startServer(file) {
  const child = spawn(process.execPath, [path.join(__dirname, 'serve-file.js'), file, String(RATE)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  const port = await new Promise((resolve) => child.stdout.once('data', (d) => resolve(Number(String(d).trim()))))
  return { url: `http://127.0.0.1:${port}/model.gguf`, stop: () => child.kill() }
}

async function timed(fn) {
  const start = process.hrtime.bigint()
  await fn()
  return Number(process.hrtime.bigint() - start) / 1e9
}

async function main() {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'genai-electron-bench-'))
  const source = path.join(work, 'source.gguf')
  console.error(`writing a ${(SIZE / 2 ** 20).toFixed(0)} MiB source file…`)
  const sha256 = makeSource(source)
  const server = await startServer(source)
  const dist = anchorDist()
  const { Downloader } = await import(pathToFileURL(path.join(dist, 'download', 'Downloader.js')))
  const { calculateSHA256 } = await import(pathToFileURL(path.join(dist, 'download', 'checksum.js')))
  const lib = require('..')
  lib.configure({ dataDir: path.join(work, 'data') })

  const cases = {
    curl: async () => {
      const out = path.join(work, 'curl.gguf')
      const r = spawnSync('curl', ['-sf', '-o', out, server.url])
      if (r.status !== 0) throw new Error('curl failed')
      fs.rmSync(out)
    },
    'genai-electron (Rust), sha256 while streaming': async () => {
      const info = await lib.modelManager.downloadModel({
        source: 'url',
        url: server.url,
        name: 'bench',
        type: 'llm',
        checksum: sha256,
      })
      await lib.modelManager.deleteModel(info.id)
    },
    'genai-electron 0.26 download': async () => {
      const out = path.join(work, 'anchor.gguf')
      await new Downloader().download({ url: server.url, destination: out })
      fs.rmSync(out)
    },
    'genai-electron 0.26 download + sha256': async () => {
      const out = path.join(work, 'anchor.gguf')
      await new Downloader().download({ url: server.url, destination: out })
      if ((await calculateSHA256(out)) !== sha256) throw new Error('anchor checksum differs')
      fs.rmSync(out)
    },
  }
  // BENCH_ONLY=curl,Rust runs the cases whose names contain one of these words.
  const only = process.env.BENCH_ONLY?.split(',')
  for (const name of Object.keys(cases)) if (only && !only.some((w) => name.includes(w))) delete cases[name]
  const seconds = Object.fromEntries(Object.keys(cases).map((k) => [k, []]))
  for (let run = 0; run < RUNS; run++) {
    for (const [name, fn] of Object.entries(cases)) seconds[name].push(await timed(fn))
  }
  server.stop()
  fs.rmSync(work, { recursive: true, force: true })

  const mibps = (s) => SIZE / 2 ** 20 / s
  const ours = median(seconds['genai-electron (Rust), sha256 while streaming'])
  const curl = median(seconds.curl)
  const link = RATE > 0 ? `paced at ${RATE} MiB/s` : 'unpaced'
  console.log(
    `download of ${(SIZE / 2 ** 20).toFixed(0)} MiB from 127.0.0.1 (${link}), median of ${RUNS} (node ${process.version}, ${os.cpus().length} CPUs)`,
  )
  console.table(
    Object.fromEntries(
      Object.entries(seconds).map(([name, s]) => [
        name,
        {
          seconds: median(s).toFixed(2),
          'MiB/s': mibps(median(s)).toFixed(0),
          'time ÷ ours': (median(s) / ours).toFixed(2),
        },
      ]),
    ),
  )
  console.log(`ours vs curl: ${(curl / ours).toFixed(2)}× curl's throughput (goal ≥ 0.95)`)
  const anchor = seconds['genai-electron 0.26 download + sha256']
  if (anchor) console.log(`ours vs genai-electron 0.26 with sha256: ${(median(anchor) / ours).toFixed(2)}× faster`)
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
