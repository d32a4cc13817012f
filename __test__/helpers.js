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
