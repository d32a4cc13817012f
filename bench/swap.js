'use strict'

// The swap policy, in one run (needs `npm run backends`): a burst of ten 64×64 images and five
// chat requests (the real chat model, one sent while each odd image is made) under a budget that
// forces the LLM out, with `collate`, with `collate` and a short maxChatWait, and with `fifo`, one
// after the other on the same servers. Printed side by side: reloads, failed requests (goal 0),
// p50/p95 chat wait, total time.
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { backends } = require('./common')
const { registerModels } = require('./estimates')

const IMAGES = 10
const CHAT_DURING = new Set([1, 3, 5, 7, 9])

const percentile = (values, p) => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]
}

async function chat(port) {
  const began = performance.now()
  try {
    const answer = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ messages: [{ role: 'user', content: 'What is the capital of France?' }], max_tokens: 8 }),
    })
    await answer.text()
    return { ok: answer.status === 200, ms: performance.now() - began }
  } catch {
    return { ok: false, ms: performance.now() - began }
  }
}

/** One burst under `options`: the images queued at once, a chat while each odd one is made. */
async function burst(lib, options) {
  const { llamaServer, ResourceOrchestrator } = lib
  const orchestrator = new ResourceOrchestrator(undefined, undefined, undefined, undefined, {
    ramBudgetBytes: 1e6,
    headroom: 0,
    ...options,
  })
  let reloads = 0
  let begun = 0
  const chats = []
  orchestrator.on('reload', () => reloads++)
  orchestrator.on('phase', ({ phase }) => {
    if (phase === 'generating' && CHAT_DURING.has(++begun)) chats.push(chat(llamaServer.getPort()))
  })
  const began = performance.now()
  const images = await Promise.allSettled(
    Array.from({ length: IMAGES }, (_, seed) =>
      orchestrator.orchestrateImageGeneration({
        prompt: 'a red cube',
        width: 64,
        height: 64,
        steps: 2,
        cfgScale: 1,
        seed,
      }),
    ),
  )
  const answers = await Promise.all(chats)
  const totalMs = performance.now() - began
  const waits = answers.map((a) => a.ms)
  return {
    reloads,
    'failed requests': images.filter((r) => r.status === 'rejected').length + answers.filter((a) => !a.ok).length,
    'chat p50 ms': percentile(waits, 50).toFixed(0),
    'chat p95 ms': percentile(waits, 95).toFixed(0),
    'total s': (totalMs / 1000).toFixed(1),
  }
}

async function main() {
  const real = backends()
  const lib = require('..')
  const { configure, llamaServer, diffusionServer } = lib
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'genai-electron-bench-swap-'))
  configure({ dataDir })
  await registerModels(lib, real)
  try {
    await diffusionServer.start({ modelId: 'tiny-image', backend: 'one-shot', port: 'auto', threads: 1 })
    await llamaServer.start({ modelId: 'chat', port: 'auto', threads: 1, contextSize: 2048 })
    const rows = {
      collate: await burst(lib, { policy: 'collate' }),
      'collate, maxChatWait 3 s': await burst(lib, { policy: 'collate', maxChatWait: 3000 }),
      fifo: await burst(lib, { policy: 'fifo' }),
    }
    console.log(`\n${IMAGES} images and ${CHAT_DURING.size} chat requests, the LLM forced out for each image`)
    console.table(rows)
    const ratio = Number(rows.fifo['total s']) / Number(rows.collate['total s'])
    console.log(
      `collate: ${rows.collate.reloads} reload(s) against fifo's ${rows.fifo.reloads}; fifo takes ${ratio.toFixed(2)}× as long (each reload here is of a 135M model: larger ones cost seconds each)`,
    )
  } finally {
    await Promise.all([llamaServer.stop(), diffusionServer.stop()])
    fs.rmSync(dataDir, { recursive: true, force: true })
  }
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
