'use strict'

const { spawn } = require('node:child_process')
const fs = require('node:fs')
const http = require('node:http')
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

/** Serves local files (`{ '/name': path }`) on 127.0.0.1 while `use(baseUrl)` runs. */
async function serveFiles(files, use) {
  const server = http.createServer((req, res) => fs.createReadStream(files[req.url]).pipe(res))
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  try {
    return await use(`http://127.0.0.1:${server.address().port}`)
  } finally {
    server.close()
  }
}

/** Registers the tiny diffusion set of `npm run backends` as one multi-component model. */
function downloadTinyImageSet(modelManager, real, name = 'tiny-image') {
  const files = { '/diffusion.gguf': real.diffusionModel, '/llm.gguf': real.diffusionComponents.llm, '/taesd.gguf': real.diffusionComponents.taesd }
  return serveFiles(files, (base) =>
    modelManager.downloadModel({
      source: 'url',
      url: `${base}/diffusion.gguf`,
      name,
      type: 'diffusion',
      components: [
        { role: 'llm', source: 'url', url: `${base}/llm.gguf` },
        { role: 'taesd', source: 'url', url: `${base}/taesd.gguf` },
      ],
    }),
  )
}

module.exports.serveFiles = serveFiles
module.exports.downloadTinyImageSet = downloadTinyImageSet

/**
 * A fresh data folder (configured) with the tiny llm of `npm run backends` registered as `tiny`,
 * and the real llama-server chosen through its environment variable. Resolves with the folder.
 */
async function withTinyModel(real) {
  const { ModelManager, configure } = require('..')
  const dataDir = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'genai-electron-llama-'))
  configure({ dataDir })
  process.env.GENAI_ELECTRON_LLAMA_SERVER = real.llamaServer
  await serveFiles({ '/tiny.gguf': real.llmModel }, (base) =>
    new ModelManager().downloadModel({ source: 'url', url: `${base}/tiny.gguf`, name: 'tiny', type: 'llm' }),
  )
  return dataDir
}

module.exports.withTinyModel = withTinyModel

/**
 * The tiny llm running behind its gateway and the tiny image set on a diffusion server (one-shot
 * unless `diffusionConfig` says otherwise), in a fresh data folder; `stop()` stops both.
 */
async function startTinyServers(real, diffusionConfig = {}) {
  const { LlamaServerManager, DiffusionServerManager, ModelManager } = require('..')
  await withTinyModel(real)
  process.env.GENAI_ELECTRON_SD_CLI = real.sdCli
  process.env.GENAI_ELECTRON_SD_SERVER = real.sdServer
  await downloadTinyImageSet(new ModelManager(), real)
  const llama = new LlamaServerManager()
  const diffusion = new DiffusionServerManager()
  const info = await llama.start({ modelId: 'tiny', port: 'auto', threads: 1, contextSize: 512 })
  await diffusion.start({ modelId: 'tiny-image', backend: 'one-shot', port: 'auto', threads: 1, ...diffusionConfig })
  const stop = () => Promise.all([llama.stop(), diffusion.stop()])
  return { llama, diffusion, info, stop }
}

module.exports.startTinyServers = startTinyServers
