'use strict'

// Image time through diffusionServer for the tiny test model at 64×64 (2 steps), in the same run:
//   one-shot: sd-cli per image (the model is loaded every time);
//   resident: sd-server keeps the model loaded (the first image, which loads it, is reported apart).
// Each image goes over HTTP (POST /v1/images/generations); our overhead is the end-to-end time
// minus the time the backend itself took (`backendTime`: the sd-cli process, or the sd-server
// job). Prints medians and the resident/one-shot ratio. Needs `npm run backends`.
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { backends, median } = require('./common')
const { downloadTinyImageSet } = require('../__test__/helpers')

const RUNS = Number(process.env.BENCH_RUNS ?? 7)
const BODY = JSON.stringify({ prompt: 'a red cube', width: 64, height: 64, steps: 2, cfgScale: 1, seed: 42 })

const ms = (x) => `${x.toFixed(1)} ms`

async function image(port) {
  const start = process.hrtime.bigint()
  const response = await fetch(`http://127.0.0.1:${port}/v1/images/generations`, { method: 'POST', body: BODY })
  const body = await response.json()
  const e2e = Number(process.hrtime.bigint() - start) / 1e6
  if (response.status !== 200) throw new Error(JSON.stringify(body))
  return { e2e, backend: body.backendTime, overhead: e2e - body.backendTime }
}

async function series(server, backend) {
  const { port } = await server.start({ modelId: 'tiny-image', backend, port: 'auto', threads: 1 })
  try {
    const first = await image(port)
    const rest = []
    for (let i = 0; i < RUNS; i++) rest.push(await image(port))
    return { first, rest }
  } finally {
    await server.stop()
  }
}

async function main() {
  const real = backends()
  process.env.GENAI_ELECTRON_DATA_DIR = fs.mkdtempSync(path.join(os.tmpdir(), 'genai-electron-bench-'))
  process.env.GENAI_ELECTRON_SD_CLI = real.sdCli
  process.env.GENAI_ELECTRON_SD_SERVER = real.sdServer
  const lib = require('..')
  await downloadTinyImageSet(new lib.ModelManager(), real)
  const server = new lib.DiffusionServerManager()
  const oneShot = await series(server, 'one-shot')
  const resident = await series(server, 'resident')
  const all = (s) => [s.first, ...s.rest]
  const oneShotMedian = median(oneShot.rest.map((r) => r.e2e))
  const residentMedian = median(resident.rest.map((r) => r.e2e))
  console.log(`diffusion, tiny model 64×64, 2 steps, ${RUNS} images after the first, median end-to-end:`)
  console.log(`  one-shot (sd-cli)     ${ms(oneShotMedian)}  (first ${ms(oneShot.first.e2e)})`)
  console.log(`  resident (sd-server)  ${ms(residentMedian)}  (first, loading the model: ${ms(resident.first.e2e)})`)
  console.log(
    `  resident / one-shot = ${(residentMedian / oneShotMedian).toFixed(2)}  (saves ${ms(oneShotMedian - residentMedian)} per image)`,
  )
  console.log(
    `  our HTTP overhead (end-to-end − backend), median: one-shot ${ms(median(all(oneShot).map((r) => r.overhead)))}, resident ${ms(median(all(resident).map((r) => r.overhead)))}  (goal ≤ 5 ms)`,
  )
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
