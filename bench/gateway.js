'use strict'

// Streaming through the LLM gateway against straight to llama-server, in the same run:
// one llamaServer (the real chat model, SmolLM2-135M, one thread), the same streamed request
// sent RUNS times to each, interleaved. Time to first token and tokens per second, medians and
// ratios. Goals: throughput ≥ 0.98 of direct, ≤ 2 ms added to the first token. Needs
// `npm run backends`.
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { backends, median } = require('./common')
const { registerModels, printEstimateTable } = require('./estimates')

const RUNS = Number(process.env.BENCH_RUNS ?? 15)
const MAX_TOKENS = 48

/** One streamed chat: ms to the first content chunk, and content chunks per second after it. */
async function streamed(port) {
  const began = performance.now()
  const response = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      messages: [{ role: 'user', content: 'Count from one to fifty in words.' }],
      max_tokens: MAX_TOKENS,
      temperature: 0,
      stream: true,
    }),
  })
  let first = null
  let tokens = 0
  let pending = ''
  const decoder = new TextDecoder()
  for await (const chunk of response.body) {
    pending += decoder.decode(chunk, { stream: true })
    const events = pending.split('\n\n')
    pending = events.pop()
    for (const event of events) {
      if (!event.startsWith('data: ') || event.includes('[DONE]')) continue
      if (JSON.parse(event.slice(6)).choices?.[0]?.delta?.content) {
        first ??= performance.now()
        tokens++
      }
    }
  }
  const end = performance.now()
  return { ttft: first - began, rate: (tokens - 1) / ((end - first) / 1000), tokens }
}

async function main() {
  const real = backends()
  const lib = require('..')
  const { configure, llamaServer } = lib
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'genai-electron-bench-gateway-'))
  configure({ dataDir })
  await registerModels(lib, real)
  const info = await llamaServer.start({ modelId: 'chat', port: 'auto', threads: 1, contextSize: 2048 })
  const runs = { direct: [], gateway: [] }
  try {
    await streamed(info.backendPort) // warm-up: the first request loads caches
    for (let i = 0; i < RUNS; i++) {
      runs.direct.push(await streamed(info.backendPort))
      runs.gateway.push(await streamed(info.port))
    }
  } finally {
    await llamaServer.stop()
  }
  const summary = (list) => ({ ttft: median(list.map((r) => r.ttft)), rate: median(list.map((r) => r.rate)) })
  const direct = summary(runs.direct)
  const gateway = summary(runs.gateway)
  console.log(`\nstreamed chat, ${MAX_TOKENS} tokens, median of ${RUNS}, interleaved (node ${process.version})`)
  console.table({
    'straight to llama-server': { 'first token ms': direct.ttft.toFixed(1), 'tokens/s': direct.rate.toFixed(1) },
    'through the gateway': { 'first token ms': gateway.ttft.toFixed(1), 'tokens/s': gateway.rate.toFixed(1) },
  })
  const ratio = gateway.rate / direct.rate
  const added = gateway.ttft - direct.ttft
  console.log(
    `gateway: ${ratio.toFixed(3)}× direct throughput (goal ≥ 0.98), ${added.toFixed(2)} ms added to the first token (goal ≤ 2)`,
  )
  await printEstimateTable(lib, real)
  fs.rmSync(dataDir, { recursive: true, force: true })
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
