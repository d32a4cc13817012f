'use strict'

// Runs the control panel's web mode with the backends of `npm run backends`, and serves their
// models on 127.0.0.1 so they can be downloaded from the Models tab (this machine cannot reach
// Hugging Face). Started by scripts/panel.sh.

const fs = require('node:fs')
const http = require('node:http')
const path = require('node:path')
const { spawn } = require('node:child_process')

const real = JSON.parse(fs.readFileSync(process.env.GENAI_ELECTRON_PANEL_BACKENDS, 'utf8'))
const files = {
  '/SmolLM2-135M-Instruct.gguf': real.chatModel,
  '/tiny-llm.gguf': real.llmModel,
  '/tiny-diffusion.gguf': real.diffusionModel,
  '/tiny-diffusion-llm.gguf': real.diffusionComponents.llm,
  '/tiny-diffusion-taesd.gguf': real.diffusionComponents.taesd,
}

const models = http.createServer((req, res) => {
  const file = files[req.url]
  if (!file) return res.writeHead(404).end()
  res.writeHead(200, { 'content-length': fs.statSync(file).size })
  fs.createReadStream(file).pipe(res)
})

models.listen(0, '127.0.0.1', () => {
  const base = `http://127.0.0.1:${models.address().port}`
  console.log('Models to download from the Models tab (URL source):')
  console.log(`  LLM        ${base}/SmolLM2-135M-Instruct.gguf   (a real instruct model, 98 MB)`)
  console.log(`  diffusion  ${base}/tiny-diffusion.gguf   with components llm ${base}/tiny-diffusion-llm.gguf`)
  console.log(`             and taesd ${base}/tiny-diffusion-taesd.gguf   (random weights: the images are noise)`)
  const web = spawn(process.execPath, ['dist/node/main/web.js', '--port', process.env.PORT ?? '5175'], {
    cwd: path.join(__dirname, '../examples/electron-control-panel'),
    env: {
      ...process.env,
      GENAI_ELECTRON_LLAMA_SERVER: real.llamaServer,
      GENAI_ELECTRON_SD_CLI: real.sdCli,
      GENAI_ELECTRON_SD_SERVER: real.sdServer,
    },
    stdio: 'inherit',
  })
  // Ctrl-C reaches both processes; the web mode stops its servers, then this one ends.
  process.on('SIGINT', () => {})
  process.on('SIGTERM', () => web.kill('SIGTERM'))
  web.on('exit', (code) => {
    models.close()
    process.exit(code ?? 0)
  })
})
