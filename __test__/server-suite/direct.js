#!/usr/bin/env node
'use strict'

// llama-server alone, with the suite's Hugging Face models swapped for the installed chat model:
// the baseline the run through the gateway is held to. Environment: SUITE_LLAMA_SERVER,
// SUITE_CHAT_MODEL.

const { spawn } = require('node:child_process')
const { modelFlags } = require('./flags')

const argv = process.argv.slice(2)
const args = ['-m', process.env.SUITE_CHAT_MODEL]
for (let i = 0; i < argv.length; i++) {
  const skip = modelFlags(argv, i)
  if (skip) i += skip - 1
  else args.push(argv[i])
}
// pytest kills a server that does not stop within 5 s: llama-server then dies with this process
// (util-linux's setpriv sets PR_SET_PDEATHSIG and execs it), instead of holding the port.
const child = spawn('setpriv', ['--pdeathsig', 'KILL', process.env.SUITE_LLAMA_SERVER, ...args], {
  stdio: 'inherit',
})
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => child.kill(signal))
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)))
