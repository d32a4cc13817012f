'use strict'

// Startup cost of the addon: time to require() it and to run detect(), each against a plain
// `node -e ''` measured in the same run. Each figure is the median of RUNS fresh processes.
const { spawnSync } = require('node:child_process')
const path = require('node:path')
const { median } = require('./common')

const ROOT = path.resolve(__dirname, '..')
const RUNS = Number(process.env.BENCH_RUNS ?? 30)

// Cases run interleaved, so drift in machine load hits all of them alike.
function timeProcesses(sources) {
  const samples = sources.map(() => [])
  for (let i = 0; i < RUNS; i++) {
    sources.forEach((source, k) => {
      const start = process.hrtime.bigint()
      const result = spawnSync(process.execPath, ['-e', source], { cwd: ROOT, encoding: 'utf8' })
      samples[k].push(Number(process.hrtime.bigint() - start) / 1e6)
      if (result.status !== 0) throw new Error(`${source} failed:\n${result.stderr}`)
    })
  }
  return samples.map(median)
}

// Inside the child: time from before require() to after it, and a cold then a cached detect().
const IN_PROCESS = `
  const t0 = process.hrtime.bigint()
  const lib = require('./')
  const t1 = process.hrtime.bigint()
  lib.systemInfo.detect().then(async () => {
    const t2 = process.hrtime.bigint()
    await lib.systemInfo.detect()
    const t3 = process.hrtime.bigint()
    console.log(JSON.stringify({ require: Number(t1 - t0) / 1e6, detect: Number(t2 - t1) / 1e6, cached: Number(t3 - t2) / 1e6 }))
  })`

function inProcess() {
  const rows = []
  for (let i = 0; i < RUNS; i++) {
    const result = spawnSync(process.execPath, ['-e', IN_PROCESS], { cwd: ROOT, encoding: 'utf8' })
    if (result.status !== 0) throw new Error(result.stderr)
    rows.push(JSON.parse(result.stdout))
  }
  const pick = (key) => median(rows.map((r) => r[key]))
  return { require: pick('require'), detect: pick('detect'), cached: pick('cached') }
}

const [baseline, withRequire, withDetect] = timeProcesses([
  '',
  "require('./')",
  "require('./').systemInfo.detect().then(() => {})",
])
const inside = inProcess()

const ms = (v) => `${v.toFixed(2)} ms`
console.log(`startup, median of ${RUNS} fresh processes (node ${process.version}, ${process.platform}-${process.arch})`)
console.table({
  "node -e ''  (baseline)": { wall: ms(baseline), ratio: '1.00' },
  "require('genai-electron')": { wall: ms(withRequire), ratio: (withRequire / baseline).toFixed(2) },
  'require + detect()': { wall: ms(withDetect), ratio: (withDetect / baseline).toFixed(2) },
})
console.table({
  'require() alone': ms(inside.require),
  'detect(), cold': ms(inside.detect),
  'detect(), cached': ms(inside.cached),
})
