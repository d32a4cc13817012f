#!/usr/bin/env node
'use strict'

// Runs llama.cpp's server test suite (tools/server/tests of the pinned sources, with pytest) with
// its servers started one of two ways: `direct` (llama-server alone) or `gateway` (llamaServer.start,
// through the gateway). `expected.json` records which tests pass direct with the small chat model;
// `llama-server-suite.test.js` runs those through the gateway. To record them again, after a
// change of the pinned llama.cpp or of the chat model:
//
//   GENAI_ELECTRON_TEST_BACKENDS=… node __test__/server-suite/run.js record
//
// which runs the whole suite (`-m "not slow"`) direct twice and keeps what passed both times.
// `run.js run direct|gateway [node ids]` runs once (the whole suite without node ids) and prints
// pytest's output.

const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { spawn } = require('node:child_process')

const HERE = __dirname
const EXPECTED = path.join(HERE, 'expected.json')
const MODEL_ID = 'suite-chat'

/** The launcher pytest starts instead of llama-server, for each way. */
const LAUNCHERS = { direct: 'direct.js', gateway: 'llama-server.js' }

/** `{ passDirect, differ }` from expected.json. */
function expected() {
  return JSON.parse(fs.readFileSync(EXPECTED, 'utf8'))
}

/** A fresh data folder with the chat model installed (imported: a hard link, no download). */
async function dataFolderWithChatModel(real, dataDir) {
  const { configure, ModelManager } = require('../..')
  configure({ dataDir })
  await new ModelManager().importModel({ path: real.chatModel, type: 'llm', name: MODEL_ID })
}

/**
 * Runs the suite's `tests` (node ids; empty: the whole suite but its slow tests) with servers
 * started `via` 'direct' or 'gateway', on `workers` pytest-xdist workers (3 on 2 cores: a test's
 * servers wait on their loads as much as they compute; 130 s for the 257 tests here, 143 with 2,
 * 135 with 4). Resolves with `{ outcomes: { nodeid: 'passed' | 'failed' | 'error' | 'skipped' },
 * output, code }`.
 */
async function runSuite(real, { via, tests = [], workers = 3 }) {
  const suite = real.serverSuite
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'genai-electron-suite-'))
  try {
    const dataDir = path.join(work, 'data')
    if (via === 'gateway') await dataFolderWithChatModel(real, dataDir)
    const results = path.join(work, 'results.json')
    const args = ['-m', 'pytest', '-p', 'suite_plugin', '-p', 'no:cacheprovider', '-q', '-m', 'not slow']
    if (workers > 1) args.push('-n', String(workers), '--dist=worksteal')
    const env = {
      ...process.env,
      PYTHONPATH: [HERE, process.env.PYTHONPATH].filter(Boolean).join(path.delimiter),
      LLAMA_SERVER_BIN_PATH: path.join(HERE, LAUNCHERS[via]),
      SUITE_LLAMA_SERVER: real.llamaServer,
      SUITE_CHAT_MODEL: real.chatModel,
      SUITE_DATA_DIR: dataDir,
      SUITE_MODEL_ID: MODEL_ID,
      SUITE_RESULTS: results,
      // The suite's own temporary files (LLAMA_CACHE, slot saves) stay in this run's folder.
      LLAMA_CACHE: path.join(work, 'cache'),
    }
    // Node ids on the command line could overflow it: pytest reads them from a file.
    const list = path.join(work, 'tests.txt')
    fs.writeFileSync(list, tests.join('\n'))
    if (tests.length) args.push(`@${list}`)
    const { code, output } = await spawnCollecting(suite.python, args, { cwd: suite.tests, env })
    const outcomes = fs.existsSync(results) ? JSON.parse(fs.readFileSync(results, 'utf8')) : {}
    return { outcomes, output, code }
  } finally {
    fs.rmSync(work, { recursive: true, force: true })
  }
}

function spawnCollecting(command, args, options) {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { ...options, stdio: ['ignore', 'pipe', 'pipe'] })
    let output = ''
    const keep = (chunk) => {
      output = (output + chunk).slice(-200_000)
    }
    child.stdout.on('data', keep)
    child.stderr.on('data', keep)
    child.on('error', reject)
    child.on('close', (code) => resolve({ code, output }))
  })
}

const passed = (outcomes) => Object.keys(outcomes).filter((id) => outcomes[id] === 'passed')

async function record(real) {
  const runs = []
  for (const round of [1, 2]) {
    const started = Date.now()
    const run = await runSuite(real, { via: 'direct' })
    const counts = tally(run.outcomes)
    console.log(`direct run ${round}: ${JSON.stringify(counts)} in ${Math.round((Date.now() - started) / 1000)} s`)
    if (!counts.passed) throw new Error(`the suite ran nothing:\n${run.output.slice(-4000)}`)
    runs.push(new Set(passed(run.outcomes)))
  }
  const both = [...runs[0]].filter((id) => runs[1].has(id)).sort()
  const previous = fs.existsSync(EXPECTED) ? expected() : { differ: {} }
  const next = { ...previous, passDirect: both }
  fs.writeFileSync(EXPECTED, `${JSON.stringify(next, null, 1)}\n`)
  console.log(`${both.length} tests passed direct in both runs: ${EXPECTED}`)
}

function tally(outcomes) {
  const counts = {}
  for (const outcome of Object.values(outcomes)) counts[outcome] = (counts[outcome] ?? 0) + 1
  return counts
}

module.exports = { runSuite, expected, tally }

if (require.main === module) {
  const real = JSON.parse(fs.readFileSync(process.env.GENAI_ELECTRON_TEST_BACKENDS, 'utf8'))
  const [command, via = 'gateway', ...tests] = process.argv.slice(2)
  const main =
    command === 'record'
      ? record(real)
      : runSuite(real, { via, tests }).then((run) => console.log(run.output, tally(run.outcomes)))
  main.catch((err) => {
    console.error(err)
    process.exit(1)
  })
}
