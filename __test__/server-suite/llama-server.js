#!/usr/bin/env node
'use strict'

// llama-server's command line, run as an app would run it: through `llamaServer.start` and the
// gateway in front of it. llama.cpp's own server test suite starts this in place of llama-server
// (LLAMA_SERVER_BIN_PATH), so its tests talk to our gateway. The flags the library owns become
// config fields, the rest go to `extraArgs`, and the suite's Hugging Face models are swapped for
// the installed chat model, exactly as `direct.js` does for the run against llama-server alone.
//
// Environment: SUITE_DATA_DIR (a data folder with the chat model installed as SUITE_MODEL_ID),
// SUITE_LLAMA_SERVER (the executable).

const { modelFlags, takeValue } = require('./flags')

/** Flag → the config field it sets and how its value reads. */
const VALUED = {
  '--port': ['port', Number],
  '--host': ['host', String],
  '-t': ['threads', Number],
  '--threads': ['threads', Number],
  '-c': ['contextSize', Number],
  '--ctx-size': ['contextSize', Number],
  '-ngl': ['gpuLayers', Number],
  '--n-gpu-layers': ['gpuLayers', Number],
  '--gpu-layers': ['gpuLayers', Number],
  '-np': ['parallelRequests', Number],
  '--parallel': ['parallelRequests', Number],
  '-fa': ['flashAttention', String],
  '--flash-attn': ['flashAttention', String],
  '-ctk': ['cacheTypeK', String],
  '--cache-type-k': ['cacheTypeK', String],
  '-ctv': ['cacheTypeV', String],
  '--cache-type-v': ['cacheTypeV', String],
  '--api-key': ['apiKey', String],
  '--alias': ['modelAlias', String],
  '--reasoning-format': ['reasoningFormat', String],
  '-b': ['batchSize', Number],
  '--batch-size': ['batchSize', Number],
  '--cache-ram': ['cacheRam', Number],
}

/** Switch → the config field and the value it sets. */
const SWITCHES = {
  '--jinja': ['jinja', true],
  '--no-jinja': ['jinja', false],
  '--cont-batching': ['continuousBatching', true],
  '--no-cont-batching': ['continuousBatching', false],
  '--swa-full': ['swaFull', true],
}

/** The config `llamaServer.start` gets for llama-server's arguments `argv`. */
function configFor(argv, modelId) {
  const config = { modelId, extraArgs: [] }
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]
    const skip = modelFlags(argv, i)
    if (skip) {
      i += skip - 1
    } else if (VALUED[flag]) {
      const [key, read] = VALUED[flag]
      config[key] = read(takeValue(argv, i++))
    } else if (SWITCHES[flag]) {
      const [key, value] = SWITCHES[flag]
      config[key] = value
    } else if (flag === '--cors-origins') {
      // llama-server's `localhost` is the gateway's default (loopback origins reflected).
      const origins = takeValue(argv, i++)
        .split(',')
        .map((o) => o.trim())
      config.allowedOrigins = origins.filter((o) => o !== 'localhost')
    } else {
      config.extraArgs.push(flag)
    }
  }
  return config
}

async function main() {
  const { configure, LlamaServerManager } = require('../..')
  configure({ dataDir: process.env.SUITE_DATA_DIR })
  const config = configFor(process.argv.slice(2), process.env.SUITE_MODEL_ID)
  config.binaryPath = process.env.SUITE_LLAMA_SERVER
  // As llama-server would, with no memory check: each test starts a new process, whose first start
  // would ask llama.cpp's dry run again (170 ms; 250 starts). The check has tests of its own.
  config.force = true
  const llama = new LlamaServerManager()
  // llama-server's lines, where it would write them (some tests read them).
  llama.on('log', (event) => process.stdout.write(`${event.line}\n`))
  let stopping = false
  const stop = () => {
    if (stopping) return
    stopping = true
    llama.stop().finally(() => process.exit(0))
  }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
  try {
    await llama.start(config)
  } catch (err) {
    process.stderr.write(`llamaServer.start failed: ${err.code} ${err.message}\n`)
    process.exit(1)
  }
  llama.on('crashed', (crash) => {
    process.stderr.write(`llama-server crashed: ${JSON.stringify(crash)}\n`)
    process.exit(1)
  })
}

if (require.main === module) main()

module.exports = { configFor }
