'use strict'

// The control panel in a real browser (Debian's Chromium driven by playwright-core), in web mode,
// against the real library, backends and tiny models: each tab is used as a person would, and a
// screenshot of each is saved to test-results/<tab>.png.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { spawn } = require('node:child_process')
const { PANEL, backends, panelEnv, serveFiles, modelFiles } = require('./helpers')

const CHROMIUM = process.env.GENAI_ELECTRON_CHROMIUM || '/usr/bin/chromium'
const RESULTS = path.join(PANEL, 'test-results')

function reasonToSkip() {
  const { skip } = backends()
  if (skip) return skip
  if (!fs.existsSync(CHROMIUM)) {
    const reason = `no Chromium at ${CHROMIUM}: run \`npm run test:panel\` at the repository root, which installs Debian's chromium (or set GENAI_ELECTRON_CHROMIUM)`
    if (process.env.GENAI_ELECTRON_REQUIRE_CHROMIUM) throw new Error(reason)
    return reason
  }
  return false
}
const skip = reasonToSkip()

/** Starts the web mode in a child process; resolves with its URL and a `stop` that awaits its exit. */
async function startWebMode(env) {
  const child = spawn(process.execPath, [path.join(PANEL, 'dist/node/main/web.js'), '--port', '0'], { cwd: PANEL, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the web mode did not start:\n${output}`)), 30_000)
    const read = (chunk) => {
      output += chunk
      const match = /control panel: (\S+)/.exec(output)
      if (match) {
        clearTimeout(timer)
        resolve(match[1])
      }
    }
    child.stdout.on('data', read)
    child.stderr.on('data', read)
    child.once('exit', (code) => reject(new Error(`the web mode exited (${code}):\n${output}`)))
  })
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })))
  return {
    url,
    output: () => output,
    async stop() {
      child.kill('SIGTERM')
      return exited
    },
  }
}

/** Downloads the tiny image set in the Models tab, as 'Tiny image' with its two components. */
async function downloadImageSet(byTestId, base) {
  await byTestId('download-type').selectOption('diffusion')
  await byTestId('download-name').fill('Tiny image')
  await byTestId('download-url').fill(`${base}/diffusion.gguf`)
  for (const [index, role] of ['llm', 'taesd'].entries()) {
    await byTestId('add-component').click()
    await byTestId(`component-role-${index}`).selectOption(role)
    await byTestId(`component-${index}-url`).fill(`${base}/${role}.gguf`)
  }
  await byTestId('download-start').click()
  await byTestId('models-list').getByText('Tiny image').waitFor({ timeout: 60_000 })
}

function launchBrowser() {
  const { chromium } = require('playwright-core')
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  })
}

test('the control panel, tab by tab, in Chromium against the real backends', { skip, timeout: 300_000 }, async (t) => {
  const { real } = backends()
  fs.mkdirSync(RESULTS, { recursive: true })
  // Slow enough (about 1.5 s for the tiny chat model) for the progress bar to be seen moving.
  const files = await serveFiles(modelFiles(real), { chunkBytes: 256 << 10, intervalMs: 20 })
  const web = await startWebMode(panelEnv(real))
  const browser = await launchBrowser()
  const problems = []
  try {
    const page = await browser.newPage({ viewport: { width: 1440, height: 1000 } })
    page.on('console', (message) => message.type() === 'error' && problems.push(`console: ${message.text()}`))
    page.on('pageerror', (error) => problems.push(`page error: ${error.message}`))
    page.setDefaultTimeout(30_000)
    const byTestId = (id) => page.getByTestId(id)
    const shoot = (tab) => page.screenshot({ path: path.join(RESULTS, `${tab}.png`), fullPage: true })
    await page.goto(web.url)

    await t.test('System Info shows the CPU, memory and recommendations', async () => {
      await byTestId('system-cpu').getByText('physical').waitFor()
      assert.match(await byTestId('system-memory').innerText(), /used of/)
      assert.match(await byTestId('system-recommendations').innerText(), /Largest model/)
      await shoot('system')
    })

    await t.test('Models: downloads with visible progress, a component set, and a delete', async () => {
      await byTestId('tab-models').click()
      await byTestId('download-name').fill('Tiny chat')
      await byTestId('download-url').fill(`${files.base}/tiny.gguf`)
      await byTestId('download-start').click()
      await page.waitForFunction(() => {
        const bar = document.querySelector('[data-testid=download-progress]')
        return bar && Number(bar.dataset.percent) > 0 && Number(bar.dataset.percent) < 100
      })
      await byTestId('models-list').getByText('Tiny chat').waitFor()

      await downloadImageSet(byTestId, files.base)
      assert.match(await byTestId('models-list').innerText(), /components: llm, taesd/)
      await byTestId('download-type').selectOption('lora')
      await byTestId('download-name').fill('Ink LoRA')
      await byTestId('download-url').fill(`${files.base}/tiny-lora.gguf`)
      await byTestId('download-start').click()
      await byTestId('model-ink-lora').waitFor()
      await byTestId('download-type').selectOption('upscaler')
      await byTestId('download-name').fill('Tiny x2')
      await byTestId('download-url').fill(`${files.base}/tiny-esrgan.gguf`)
      await byTestId('download-start').click()
      await byTestId('model-tiny-x2').waitFor()

      // A bad URL: the library's error, with its code, where the download was.
      await byTestId('download-type').selectOption('llm')
      await byTestId('download-name').fill('Broken')
      await byTestId('download-url').fill(`${files.base}/missing.gguf`)
      await byTestId('download-start').click()
      const error = byTestId('downloads').getByTestId('error')
      await error.waitFor()
      assert.match(await error.innerText(), /DOWNLOAD_HTTP_ERROR/)
      await shoot('models')
      assert.equal(await byTestId('models-list').getByText('Broken').count(), 0, 'nothing registered')

      // An LLM with a vision projector: what it can do is shown, and the LLM tab offers the projector.
      await byTestId('download-name').fill('Spare')
      await byTestId('download-url').fill(`${files.base}/tiny.gguf`)
      await byTestId('add-component').click()
      await byTestId('component-role-0').selectOption('mmproj')
      await byTestId('component-0-url').fill(`${files.base}/mmproj.gguf`)
      await byTestId('download-start').click()
      await byTestId('model-spare').waitFor()
      assert.equal(await byTestId('capabilities-spare').innerText(), 'can: chat, vision')
      await byTestId('tab-llm').click()
      await byTestId('llm-model').selectOption('spare')
      await byTestId('llm-projector').waitFor()
      assert.equal(await byTestId('llm-projector').inputValue(), 'auto')
      await shoot('llm-vision')
      await byTestId('llm-model').selectOption('tiny-chat')
      await byTestId('llm-projector').waitFor({ state: 'detached' })
      await byTestId('tab-models').click()
      await byTestId('delete-spare').click()
      await byTestId('model-spare').waitFor({ state: 'detached' })
    })

    await t.test('LLM Server: start, a streamed chat answer, stop', async () => {
      await byTestId('tab-llm').click()
      await byTestId('llm-threads').fill('1')
      await byTestId('llm-context').fill('512')
      await byTestId('llm-start').click()
      await byTestId('llm-status').getByText('running').waitFor()
      await byTestId('chat-prompt').fill('Hello there')
      await byTestId('chat-send').click()
      await page.locator('[data-testid=chat-answer][data-done=yes]').waitFor()
      assert.ok(Number(await byTestId('chat-stats').getAttribute('data-chunks')) > 1, 'streamed in chunks')
      assert.ok((await byTestId('chat-answer').innerText()).length > 0)
      await byTestId('llm-stop').click()
      await byTestId('llm-status').getByText('stopped').waitFor()
      // Running again for the offload demo.
      await byTestId('llm-start').click()
      await byTestId('llm-status').getByText('running').waitFor()
      await byTestId('llm-logs').locator('.log').first().waitFor()
      await shoot('llm')
    })

    await t.test('LLM Server: embedding and rerank servers beside it, and a search through both', async () => {
      await byTestId('tab-models').click()
      await byTestId('download-type').selectOption('llm')
      await byTestId('download-name').fill('Tiny reranker')
      await byTestId('download-url').fill(`${files.base}/reranker.gguf`)
      await byTestId('download-start').click()
      await byTestId('model-tiny-reranker').waitFor()
      assert.match(await byTestId('capabilities-tiny-reranker').innerText(), /rerank/)
      await byTestId('tab-llm').click()
      // The chat model embeds (by the mean of its tokens); the reranker is the one that reranks.
      assert.equal(await byTestId('search-embedding-model').inputValue(), 'tiny-chat')
      assert.equal(await byTestId('search-rerank-model').inputValue(), 'tiny-reranker')
      await byTestId('search-start').click()
      await byTestId('search-embedding-status').getByText('running').waitFor()
      await byTestId('search-rerank-status').getByText('running').waitFor()
      await byTestId('search-run').click()
      await byTestId('search-results').waitFor()
      const rows = await byTestId('search-row').allInnerTexts()
      assert.equal(rows.length, 3)
      // A similarity and a relevance score for each document.
      for (const row of rows) assert.match(row, /-?\d\.\d{3}\s+-?\d\.\d{3}\s*$/, row)
      assert.match(await byTestId('search-stats').innerText(), /^\d+-dimension embeddings/)
      await byTestId('search-servers').scrollIntoViewIfNeeded()
      await shoot('llm-search')
    })

    await t.test('Diffusion Server: start, generate with live steps, the image shown', async () => {
      await byTestId('tab-diffusion').click()
      await byTestId('diffusion-backend').selectOption('one-shot')
      await byTestId('diffusion-threads').fill('1')
      await byTestId('diffusion-start').click()
      await byTestId('diffusion-status').getByText('running').waitFor()
      for (const [id, value] of [['image-width', '64'], ['image-height', '64'], ['image-steps', '6'], ['image-cfg', '1'], ['image-seed', '3']]) await byTestId(id).fill(value)
      // Records every step the progress element shows.
      await page.evaluate(() => {
        window.__steps = []
        new MutationObserver(() => {
          const progress = document.querySelector('[data-testid=image-progress][data-stage=diffusion]')
          if (progress) window.__steps.push(Number(progress.dataset.step))
        }).observe(document.body, { subtree: true, attributes: true, childList: true })
      })
      await byTestId('image-generate').click()
      const image = byTestId('generated-image')
      await image.waitFor({ timeout: 60_000 })
      assert.match(await image.getAttribute('src'), /^data:image\/png;base64,iVBOR/)
      // Each step as it came (React may batch the last ones into the decoding stage).
      const steps = [...new Set(await page.evaluate(() => window.__steps))]
      assert.ok(steps.length >= 3 && steps.every((step, i) => i === 0 || step > steps[i - 1]) && steps.at(-1) <= 6, `steps seen: ${steps}`)
      assert.match(await byTestId('diffusion-images').innerText(), /seed 3/)
      await shoot('diffusion')
    })

    await t.test('Diffusion Server: edit the image made, with a painted mask and a LoRA', async () => {
      await byTestId('image-edit').click()
      const canvas = byTestId('mask-canvas')
      await canvas.waitFor()
      assert.equal(await byTestId('image-width').isDisabled(), true, "the size is the image's")
      const box = await canvas.boundingBox()
      await page.mouse.move(box.x + box.width * 0.2, box.y + box.height * 0.5)
      await page.mouse.down()
      await page.mouse.move(box.x + box.width * 0.8, box.y + box.height * 0.5, { steps: 8 })
      await page.mouse.up()
      await byTestId('mask-clear').waitFor({ state: 'visible' })
      assert.equal(await byTestId('mask-clear').isEnabled(), true, 'a stroke was painted')
      await byTestId('lora-ink-lora').check()
      await byTestId('lora-ink-lora-weight').fill('0.8')
      await byTestId('image-generate').click()
      await byTestId('image-progress').waitFor({ state: 'detached', timeout: 60_000 })
      await byTestId('generated-image').waitFor()
      const logs = byTestId('diffusion-logs')
      await logs.getByText('IMG2IMG').first().waitFor()
      await logs.getByText(/\(24 \/ 24\) LoRA tensors have been applied/).first().waitFor()
      // The image made, upscaled by the installed upscaler (x2).
      await byTestId('image-upscale').click()
      await byTestId('upscaled-image').waitFor({ timeout: 60_000 })
      assert.match(await byTestId('upscaled').innerText(), /upscaled with Tiny x2: 128×128/)
      // A full-page shot of a scrolled page draws the sticky top bar where it was.
      await page.evaluate(() => window.scrollTo(0, 0))
      await shoot('diffusion-edit')
      await byTestId('init-image-remove').click()
      await byTestId('lora-ink-lora').uncheck()
    })

    await t.test('Resources: the offload demo offloads, reloads and answers the held chat', async () => {
      await byTestId('tab-resources').click()
      await byTestId('resources-servers').getByText('running').first().waitFor()
      for (const [id, value] of [['demo-width', '64'], ['demo-height', '64'], ['demo-steps', '2']]) await byTestId(id).fill(value)
      await byTestId('offload-demo-run').click()
      await byTestId('offload-demo-result').waitFor({ timeout: 90_000 })
      const log = await byTestId('event-log').innerText()
      const offload = log.indexOf('LLM offloaded')
      const reload = log.indexOf('LLM reloaded')
      const answered = log.indexOf('held chat answered')
      // Newest first.
      assert.ok(answered >= 0 && reload > answered && offload > reload, log)
      // The search servers running beside the LLM stayed: the LLM alone made room.
      assert.doesNotMatch(log, /(embedding|rerank) server offloaded/)
      for (const id of ['server-1', 'server-2']) await byTestId(id).waitFor()
      const timeline = byTestId('resources-timeline')
      // A marked line for each, and its label (recharts draws labels in a layer of their own).
      for (const type of ['offload', 'reload']) {
        // A vertical line has no width, so Playwright never calls it visible.
        await timeline.locator(`.marker-${type} line`).waitFor({ state: 'attached' })
        await timeline.locator('.recharts-label').getByText(type, { exact: true }).waitFor()
      }
      await byTestId('saved-state').waitFor()
      await shoot('resources')
    })

    await t.test('no console errors in any tab', () => {
      assert.deepEqual(problems, [])
    })
  } finally {
    await browser.close()
    await files.close()
    const exit = await web.stop()
    assert.deepEqual(exit, { code: 0, signal: null }, web.output())
  }
})

/** Why the GPU test cannot run here (the backends built for the CPU), or false. */
function reasonToSkipGpu() {
  if (skip) return skip
  const { real } = backends()
  if (real.builds?.llama === 'vulkan') return false
  const reason = `the backends were built for the CPU (${JSON.stringify(real.builds)}): npm run backends builds them for Vulkan where it can`
  if (process.env.GENAI_ELECTRON_REQUIRE_VULKAN) throw new Error(reason)
  return reason
}

test("on a Vulkan device (Mesa's lavapipe): System lists it, Resources shows its memory and what the LLM takes of it", { skip: reasonToSkipGpu(), timeout: 120_000 }, async () => {
  const { real } = backends()
  const files = await serveFiles(modelFiles(real))
  // The library, llama.cpp and stable-diffusion.cpp use lavapipe (a CPU device) only when named.
  const web = await startWebMode({ ...panelEnv(real), GGML_VK_VISIBLE_DEVICES: '0' })
  const browser = await launchBrowser()
  try {
    const page = await browser.newPage({ viewport: { width: 1440, height: 1000 } })
    page.setDefaultTimeout(30_000)
    const byTestId = (id) => page.getByTestId(id)
    const shoot = (name) => page.screenshot({ path: path.join(RESULTS, `${name}.png`), fullPage: true })
    await page.goto(web.url)
    const gpu = byTestId('system-gpu')
    await gpu.getByText(/llvmpipe/).first().waitFor()
    assert.match(await gpu.innerText(), /runs on the CPU/)
    await shoot('system-gpu')

    await byTestId('tab-models').click()
    await byTestId('download-name').fill('Tiny chat')
    await byTestId('download-url').fill(`${files.base}/tiny.gguf`)
    await byTestId('download-start').click()
    await byTestId('models-list').getByText('Tiny chat').waitFor()
    await downloadImageSet(byTestId, files.base)

    await byTestId('tab-llm').click()
    await byTestId('llm-threads').fill('1')
    await byTestId('llm-context').fill('512')
    await byTestId('llm-start').click()
    await byTestId('llm-status').getByText('running').waitFor()
    // On lavapipe the pinned sd aborts now and then with its text encoder or VAE on the device.
    await byTestId('tab-diffusion').click()
    await byTestId('diffusion-backend').selectOption('one-shot')
    await byTestId('diffusion-threads').fill('1')
    await byTestId('diffusion-placement').selectOption('encoders')
    await byTestId('diffusion-start').click()
    await byTestId('diffusion-status').getByText('running').waitFor()

    await byTestId('tab-resources').click()
    const memory = byTestId('resources-memory')
    await memory.getByText(/used of .*llvmpipe/).waitFor()
    // Every layer of the LLM is on the device: its VRAM estimate is shown beside its RAM.
    await page.waitForFunction(() => /\d/.test(document.querySelector('[data-testid=llm-vram]')?.textContent ?? ''))
    assert.match(await memory.innerText(), /VRAM; an image (would offload the servers marked so|fits beside the llama servers) \(VRAM decides\)/)
    // The demo's budget is VRAM, which decides here.
    for (const [id, value] of [['demo-width', '64'], ['demo-height', '64'], ['demo-steps', '2']]) await byTestId(id).fill(value)
    await byTestId('offload-demo-run').click()
    await byTestId('offload-demo-result').waitFor({ timeout: 90_000 })
    assert.match(await byTestId('offload-demo-budget').innerText(), /of VRAM$/)
    assert.match(await byTestId('event-log').innerText(), /LLM offloaded[\s\S]*LLM reloaded|LLM reloaded[\s\S]*LLM offloaded/)
    await shoot('resources-gpu')
  } finally {
    await browser.close()
    await files.close()
    const exit = await web.stop()
    assert.deepEqual(exit, { code: 0, signal: null }, web.output())
  }
})
