'use strict'

const { spawn } = require('node:child_process')
const path = require('node:path')

const ROOT = path.resolve(__dirname, '..')

/** Runs a Node script in a child process (fresh module state), resolving with its outcome. */
function runNode(source, { env = {}, args = [], timeoutMs = 30_000 } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...args, '-e', source], {
      cwd: ROOT,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => (stdout += d))
    child.stderr.on('data', (d) => (stderr += d))
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`child timed out after ${timeoutMs} ms\n${stderr}`))
    }, timeoutMs)
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, stdout, stderr })
    })
  })
}

module.exports = { ROOT, runNode }

/**
 * The real backends and tiny models (`npm run backends`): `npm test` builds them and passes
 * their JSON through GENAI_ELECTRON_TEST_BACKENDS. Returns null, with the reason, without them.
 */
function backends() {
  const file = process.env.GENAI_ELECTRON_TEST_BACKENDS
  if (!file) return { skip: 'real backends not provided: run `npm test` (or set GENAI_ELECTRON_TEST_BACKENDS to the JSON file `npm run backends` prints)' }
  return { paths: JSON.parse(require('node:fs').readFileSync(file, 'utf8')) }
}

module.exports.backends = backends
