'use strict'

// What the panel's tests share: the real backends of `npm run backends`, a fresh data folder, and
// a loopback file server that can send slowly enough for a progress bar to be seen.

const fs = require('node:fs')
const http = require('node:http')
const os = require('node:os')
const path = require('node:path')

const PANEL = path.resolve(__dirname, '..')

/** The real backends and tiny models, or the reason they are missing (the test is then skipped). */
function backends() {
  const file = process.env.GENAI_ELECTRON_TEST_BACKENDS
  if (!file) return { skip: 'real backends not provided: run `npm run test:panel` at the repository root (or set GENAI_ELECTRON_TEST_BACKENDS to the JSON file `npm run backends` prints)' }
  return { real: JSON.parse(fs.readFileSync(file, 'utf8')) }
}

/** The environment that points the library at the real binaries and a fresh data folder. */
function panelEnv(real) {
  return {
    GENAI_ELECTRON_DATA_DIR: fs.mkdtempSync(path.join(os.tmpdir(), 'genai-electron-panel-')),
    GENAI_ELECTRON_LLAMA_SERVER: real.llamaServer,
    GENAI_ELECTRON_SD_CLI: real.sdCli,
    GENAI_ELECTRON_SD_SERVER: real.sdServer,
  }
}

/**
 * Serves `{ '/name': path }` on 127.0.0.1, `chunkBytes` every `intervalMs` (all at once when
 * `chunkBytes` is 0). Resolves with its base URL and `close`.
 */
async function serveFiles(files, { chunkBytes = 0, intervalMs = 10 } = {}) {
  const server = http.createServer(async (req, res) => {
    const file = files[req.url]
    if (!file) return res.writeHead(404).end()
    const data = fs.readFileSync(file)
    res.writeHead(200, { 'content-length': data.length, 'content-type': 'application/octet-stream' })
    if (!chunkBytes) return res.end(data)
    for (let at = 0; at < data.length && !res.destroyed; at += chunkBytes) {
      res.write(data.subarray(at, at + chunkBytes))
      await new Promise((resolve) => setTimeout(resolve, intervalMs))
    }
    res.end()
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    base: `http://127.0.0.1:${server.address().port}`,
    close: () => {
      server.closeAllConnections()
      return new Promise((resolve) => server.close(resolve))
    },
  }
}

/** The files the tests download: the tiny chat model and the tiny diffusion set. */
function modelFiles(real) {
  return {
    '/tiny.gguf': real.llmModel,
    '/diffusion.gguf': real.diffusionModel,
    '/llm.gguf': real.diffusionComponents.llm,
    '/taesd.gguf': real.diffusionComponents.taesd,
    '/tiny-lora.gguf': real.diffusionLoras.gguf,
    '/tiny-esrgan.gguf': real.upscaler,
    '/mmproj.gguf': real.shapedModels.mmproj,
    '/reranker.gguf': real.shapedModels.reranker,
  }
}

module.exports = { PANEL, backends, panelEnv, serveFiles, modelFiles }
