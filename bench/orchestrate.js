'use strict'

// The ResourceOrchestrator, in one run (needs `npm run backends`):
// 1. Its estimates against measured peak RSS (bench/estimates.js).
// 2. offload → image → reload through orchestrateImageGeneration against the same steps done by
//    hand (llamaServer.stop, generateImage, llamaServer.start), RUNS times interleaved; the
//    difference is the orchestration's overhead (goal ≤ 100 ms).
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { backends, median } = require('./common')
const { registerModels, printEstimateTable } = require('./estimates')

const RUNS = Number(process.env.BENCH_RUNS ?? 5)

async function main() {
  const real = backends()
  const lib = require('..')
  const { configure, llamaServer, diffusionServer, ResourceOrchestrator } = lib
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'genai-electron-bench-orchestrate-'))
  configure({ dataDir })
  await registerModels(lib, real)
  try {
    await printEstimateTable(lib, real)

    await diffusionServer.start({ modelId: 'tiny-image', backend: 'one-shot', port: 'auto', threads: 1 })
    await llamaServer.start({ modelId: 'chat', port: 'auto', threads: 1, contextSize: 2048 })
    const forced = new ResourceOrchestrator(undefined, undefined, undefined, undefined, {
      ramBudgetBytes: 1e6,
      headroom: 0,
    })
    const image = { prompt: 'a red cube', width: 64, height: 64, steps: 2, cfgScale: 1, seed: 1 }
    const times = { orchestrated: [], byHand: [] }
    for (let i = 0; i < RUNS; i++) {
      const port = llamaServer.getPort()
      let began = performance.now()
      await forced.orchestrateImageGeneration(image)
      times.orchestrated.push(performance.now() - began)
      if (llamaServer.getPort() !== port) throw new Error('the LLM came back on another port')
      began = performance.now()
      await llamaServer.stop()
      await diffusionServer.generateImage(image)
      await llamaServer.start(llamaServer.getStartConfig())
      times.byHand.push(performance.now() - began)
    }
    const orchestrated = median(times.orchestrated)
    const byHand = median(times.byHand)
    console.log(`\noffload → 64×64 image → reload, median of ${RUNS}, interleaved`)
    console.table({
      orchestrateImageGeneration: { ms: orchestrated.toFixed(0) },
      'stop, generateImage, start by hand': { ms: byHand.toFixed(0) },
    })
    console.log(`orchestration overhead: ${(orchestrated - byHand).toFixed(0)} ms (goal ≤ 100)`)
  } finally {
    await Promise.all([llamaServer.stop(), diffusionServer.stop()])
    fs.rmSync(dataDir, { recursive: true, force: true })
  }
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
