'use strict'

// The seed control panel's main-process handlers (`diffusion:*`, `resources:*`, seed 001), as the
// seed writes them (its calls and field names, TypeScript types dropped), registered on a fake
// ipcMain and called against the package, the real backends and the tiny models.

const test = require('node:test')
const assert = require('node:assert/strict')
const { backends, withTinyModel, downloadTinyImageSet } = require('./helpers')
const genai = require('..')

const { paths: real, skip } = backends()

/** Registers the seed's handlers; returns `invoke(channel, ...args)` as the renderer would call it. */
function seedHandlers({ systemInfo, llamaServer, diffusionServer, modelManager, ResourceOrchestrator, LogManager }) {
  const handlers = new Map()
  const ipcMain = { handle: (channel, fn) => handlers.set(channel, fn) }

  ipcMain.handle('diffusion:start', async (_event, config) => {
    try {
      await diffusionServer.start(config)
    } catch (error) {
      throw new Error(`Failed to start diffusion server: ${error.message}`)
    }
  })
  ipcMain.handle('diffusion:stop', async () => {
    try {
      await diffusionServer.stop()
    } catch (error) {
      throw new Error(`Failed to stop diffusion server: ${error.message}`)
    }
  })
  ipcMain.handle('diffusion:status', () => diffusionServer.getInfo())
  ipcMain.handle('diffusion:health', async () => await diffusionServer.isHealthy())
  ipcMain.handle('diffusion:logs', async (_event, limit) => {
    const logStrings = await diffusionServer.getLogs(limit)
    return logStrings.map((logLine) => {
      const parsed = LogManager.parseEntry(logLine)
      if (!parsed) return { timestamp: new Date().toISOString(), level: 'info', message: logLine }
      return parsed
    })
  })
  ipcMain.handle('diffusion:clearLogs', async () => {
    await diffusionServer.clearLogs()
  })
  ipcMain.handle('diffusion:generate', async (_event, config, port = 8081) => {
    try {
      const response = await fetch(`http://localhost:${port}/v1/images/generations`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({
          prompt: config.prompt,
          negativePrompt: config.negativePrompt,
          width: config.width || 512,
          height: config.height || 512,
          steps: config.steps || 20,
          cfgScale: config.cfgScale || 7.5,
          seed: config.seed || -1,
          sampler: config.sampler || 'euler_a',
        }),
      })
      if (!response.ok) {
        const error = await response.json()
        throw new Error(error.error || 'Image generation failed')
      }
      const result = await response.json()
      return {
        imageDataUrl: `data:image/png;base64,${result.image}`,
        timeTaken: result.timeTaken,
        seed: result.seed,
        width: result.width,
        height: result.height,
      }
    } catch (error) {
      throw new Error(`Failed to generate image: ${error.message}`)
    }
  })

  let orchestrator = null
  function getOrchestrator() {
    if (!orchestrator) orchestrator = new ResourceOrchestrator(systemInfo, llamaServer, diffusionServer, modelManager)
    return orchestrator
  }
  ipcMain.handle('resources:orchestrateGeneration', async (_event, config) => {
    const result = await getOrchestrator().orchestrateImageGeneration(config)
    return {
      imageDataUrl: `data:image/png;base64,${result.image.toString('base64')}`,
      timeTaken: result.timeTaken,
      seed: result.seed,
      width: result.width,
      height: result.height,
    }
  })
  ipcMain.handle('resources:wouldNeedOffload', async () => await getOrchestrator().wouldNeedOffload())
  ipcMain.handle('resources:getSavedState', () => {
    const state = getOrchestrator().getSavedState()
    if (state) return { ...state, savedAt: state.savedAt.toISOString() }
    return null
  })
  ipcMain.handle('resources:clearSavedState', () => {
    getOrchestrator().clearSavedState()
  })
  ipcMain.handle('resources:getUsage', () => {
    const memoryInfo = systemInfo.getMemoryInfo()
    const llamaInfo = llamaServer.getInfo()
    const diffusionInfo = diffusionServer.getInfo()
    return { memory: memoryInfo, llamaServer: llamaInfo, diffusionServer: diffusionInfo }
  })

  // Electron hands the renderer a structured clone: nothing that cannot cross IPC may come back.
  return async (channel, ...args) => structuredClone(await handlers.get(channel)({}, ...args))
}

test("the seed panel's diffusion and resources handlers work against the package as written", { skip }, async () => {
  await withTinyModel(real)
  process.env.GENAI_ELECTRON_SD_CLI = real.sdCli
  process.env.GENAI_ELECTRON_SD_SERVER = real.sdServer
  await downloadTinyImageSet(genai.modelManager, real)
  const invoke = seedHandlers(genai)
  const { llamaServer, diffusionServer } = genai
  await llamaServer.start({ modelId: 'tiny', port: 'auto', threads: 1, contextSize: 512 })
  try {
    // The seed's DiffusionServerConfig fields (gpuLayers included); a free port, where the seed's
    // panel would pass 8081, which a developer's machine may have taken.
    await invoke('diffusion:start', { modelId: 'tiny-image', port: 'auto', threads: 1, gpuLayers: 0 })
    const status = await invoke('diffusion:status')
    assert.equal(status.status, 'running')
    assert.equal(status.health, 'ok')
    assert.equal(status.modelId, 'tiny-image')
    assert.equal(await invoke('diffusion:health'), true)

    const image = await invoke(
      'diffusion:generate',
      { prompt: 'a red cube', width: 64, height: 64, steps: 2, cfgScale: 1, seed: 5 },
      status.port,
    )
    assert.match(image.imageDataUrl, /^data:image\/png;base64,iVBOR/)
    assert.deepEqual([image.width, image.height, image.seed], [64, 64, 5])
    // The seed's own defaults: cfgScale 7.5, sampler euler_a, a random seed (-1).
    const defaults = await invoke(
      'diffusion:generate',
      { prompt: 'a red cube', width: 64, height: 64, steps: 1 },
      status.port,
    )
    assert.ok(defaults.seed >= 0)

    const logs = await invoke('diffusion:logs', 200)
    assert.ok(logs.length > 0 && logs.every((e) => e.timestamp && ['debug', 'info', 'warn', 'error'].includes(e.level)))
    assert.ok(
      logs.some((e) => e.message.includes('generate_image completed')),
      "sd-cli's lines, parsed",
    )
    await invoke('diffusion:clearLogs')
    assert.deepEqual(await invoke('diffusion:logs', 200), [])

    // The shared diffusionServer comes with an orchestrator (as in 0.26) until the app makes one.
    const builtIn = diffusionServer.getOrchestrator()
    assert.ok(builtIn instanceof genai.ResourceOrchestrator)
    assert.equal(await invoke('resources:wouldNeedOffload'), false)
    assert.notEqual(diffusionServer.getOrchestrator(), builtIn, "the seed's own orchestrator serves it now")
    assert.equal(await invoke('resources:getSavedState'), null)
    const orchestrated = await invoke('resources:orchestrateGeneration', {
      prompt: 'a blue sphere',
      width: 64,
      height: 64,
      steps: 2,
      cfgScale: 1,
      seed: 9,
    })
    assert.match(orchestrated.imageDataUrl, /^data:image\/png;base64,iVBOR/)
    assert.equal(orchestrated.seed, 9)
    await invoke('resources:clearSavedState')
    const usage = await invoke('resources:getUsage')
    assert.ok(usage.memory.total > usage.memory.available && usage.memory.available > 0)
    assert.equal(usage.llamaServer.status, 'running')
    assert.equal(usage.diffusionServer.status, 'running')

    await invoke('diffusion:stop')
    assert.equal((await invoke('diffusion:status')).status, 'stopped')
    await assert.rejects(
      invoke('diffusion:start', { modelId: 'missing' }),
      /Failed to start diffusion server: .*missing/,
    )
  } finally {
    await Promise.all([llamaServer.stop(), diffusionServer.stop()])
  }
})
