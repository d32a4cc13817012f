'use strict'

// A model split over machines, on one machine (needs `npm run backends`): the real chat model
// in llama-server alone, then spread over two rpc-server workers on loopback, in the same run.
// Printed side by side: time to ready and generation speed (tokens/s, median of RUNS). On one
// machine the figure is the RPC protocol's cost, not a speed-up: the split pays for the memory
// another machine would lend. Then each share of the split as sized before the start (this
// machine's, each worker's) against the RSS of its process.
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { backends, median } = require('./common')

const RUNS = Number(process.env.BENCH_RUNS ?? 3)
const TOKENS = 48

async function tokensPerSecond(port) {
  const speeds = []
  for (let i = 0; i < RUNS; i++) {
    const answer = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        messages: [{ role: 'user', content: 'Write a short story about a lighthouse.' }],
        max_tokens: TOKENS,
        temperature: 0,
        seed: i,
      }),
    }).then((r) => r.json())
    speeds.push(answer.timings.predicted_per_second)
  }
  return median(speeds)
}

const mb = (bytes) => (bytes / 1e6).toFixed(1)
const error = (estimated, measured) =>
  `${estimated >= measured ? '+' : ''}${((estimated / measured - 1) * 100).toFixed(0)}%`

/** Speed and time to ready; split over `workers`, also each share's estimate against its RSS. */
async function run(lib, workers = []) {
  const rpcWorkers = workers.map((w) => w.getEndpoint())
  const settings = { contextSize: 1024, rpcWorkers }
  // Asked before the start: a worker that llama-server holds answers nobody else.
  const sizing = workers.length
    ? await lib.systemInfo.canRunModel(await lib.modelManager.getModelInfo('chat'), settings)
    : null
  const llama = new lib.LlamaServerManager()
  const began = performance.now()
  const { port } = await llama.start({ modelId: 'chat', port: 'auto', threads: 1, ...settings })
  const readyMs = performance.now() - began
  try {
    const speed = { 'ready ms': readyMs.toFixed(0), 'tokens/s': (await tokensPerSecond(port)).toFixed(1) }
    const shares = {}
    if (sizing) {
      const here = (await llama.getMemoryUsage()).rssBytes
      shares['this machine (llama-server)'] = {
        'estimated MB': mb(sizing.estimate.ram),
        'RSS MB': mb(here),
        error: error(sizing.estimate.ram, here),
      }
      for (const [i, share] of sizing.workers.entries()) {
        const rss = (await workers[i].getMemoryUsage()).rssBytes
        shares[`worker ${i} (${share.layers} layers)`] = {
          'estimated MB': mb(share.required),
          'RSS MB': mb(rss),
          error: error(share.required, rss),
        }
      }
    }
    return { speed, shares }
  } finally {
    await llama.stop()
  }
}

async function main() {
  const real = backends()
  const lib = require('..')
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'genai-electron-bench-rpc-'))
  lib.configure({ dataDir })
  process.env.GENAI_ELECTRON_LLAMA_SERVER = real.llamaServer
  process.env.GENAI_ELECTRON_RPC_SERVER = real.rpcServer
  const { serveFiles } = require('../__test__/helpers')
  await serveFiles({ '/chat.gguf': real.chatModel }, (base) =>
    lib.modelManager.downloadModel({ source: 'url', url: `${base}/chat.gguf`, name: 'chat', type: 'llm' }),
  )
  const workers = [new lib.RpcServerManager(), new lib.RpcServerManager()]
  try {
    const { speed: local } = await run(lib)
    await Promise.all(workers.map((w) => w.start({ port: 'auto', threads: 1 })))
    const { speed: split, shares } = await run(lib, workers)
    console.log(`\nSmolLM2-135M Q4_1, ${TOKENS} tokens, median of ${RUNS}, one thread each`)
    console.table({ 'llama-server alone': local, 'split over two loopback rpc-servers': split })
    console.log('\nThe shares of the split, estimated before the start, against RSS after the runs (context 1024)')
    console.table(shares)
    const speed = Number(split['tokens/s']) / Number(local['tokens/s'])
    console.log(
      `split: ${speed.toFixed(2)}× the local speed, ${(split['ready ms'] - local['ready ms']).toFixed(0)} ms more to ready`,
    )
  } finally {
    await Promise.all(workers.map((w) => w.stop()))
    fs.rmSync(dataDir, { recursive: true, force: true })
  }
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
