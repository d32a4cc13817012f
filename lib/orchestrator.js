'use strict'

const { EventEmitter } = require('node:events')
const native = require('./native')
const { callSync, callAsync, plain } = native
const { createDispatcher } = require('./events')
const { NATIVE } = require('./server-manager')
const { LlamaServerManager, START_WITH } = require('./llama-server')
const { DiffusionServerManager, runImage, SERVED_BY } = require('./diffusion-server')
const { ValidationError } = require('./errors')

/**
 * Makes images while a chat model is loaded: when the two do not fit the memory budget, the LLM
 * is offloaded (its gateway holds chat requests, those in flight finish), the image is made, and
 * the LLM is reloaded on the same port with the same config; held chat requests are then served.
 * Images queued behind an offload run back to back (`policy: 'collate'`) until none waits or a
 * chat request has waited `maxChatWait`.
 */
class ResourceOrchestrator extends EventEmitter {
  #native
  #llama
  #diffusion
  #savedConfig = null

  /** The seed's argument order; an omitted manager is the shared one. */
  constructor(systemInfo, llamaServer, diffusionServer, modelManager, options) {
    super()
    this.#llama = llamaServer ?? LlamaServerManager.getInstance()
    this.#diffusion = diffusionServer ?? DiffusionServerManager.getInstance()
    if (!(this.#llama instanceof LlamaServerManager) || !(this.#diffusion instanceof DiffusionServerManager)) {
      throw new ValidationError("llamaServer and diffusionServer must be the library's managers", {
        suggestion: 'Pass llamaServer and diffusionServer (or leave them out for the shared ones)',
      })
    }
    void systemInfo
    void modelManager
    const dispatch = createDispatcher(this)
    // Chat requests held at the LLM's gateway, announced here too.
    for (const type of ['queued', 'dequeued']) this.#llama.on(type, dispatch)
    this.#native = callSync(
      () =>
        new native.binding.NativeResourceOrchestrator(
          this.#llama[NATIVE],
          this.#diffusion[NATIVE],
          plain('options', options ?? {}),
          (event) => {
            // The request that started the LLM, as the app passed it: what a reload repeats.
            if (event.type === 'offload') this.#savedConfig = this.#llama.getStartConfig()
            if (event.type === 'reload') this.#savedConfig = null
            dispatch(event)
          },
        ),
    )
    // From now on every image of that server asks this orchestrator for its turn.
    this.#diffusion[SERVED_BY](this)
  }

  /** Makes the image, offloading the LLM first when both do not fit; the LLM comes back in any case. */
  async orchestrateImageGeneration(config) {
    return runImage(
      this.#diffusion,
      config,
      (request, id) => this.#native.orchestrate(request, id),
      (id) => this.#native.cancel(id),
    )
  }

  /**
   * Stops deciding the diffusion server's images: the orchestrator constructed before this one
   * (for the shared servers, their own) serves again. Its own later calls are made as the
   * server's other images are. For orchestrators made for a moment (a budget tried once).
   */
  dispose() {
    this.#native.dispose()
    this.#diffusion[SERVED_BY](this, false)
  }

  /** genai-electron 0.26's batch: one request of `count` images, answered as one result per image. */
  async orchestrateBatchGeneration(config) {
    const batch = await this.orchestrateImageGeneration(config)
    return batch.images.map((image, i) => ({
      image,
      images: [image],
      format: 'png',
      timeTaken: batch.timeTaken,
      backendTime: batch.backendTime,
      seed: batch.seeds[i],
      seeds: [batch.seeds[i]],
      width: batch.width,
      height: batch.height,
    }))
  }

  /**
   * `llamaServer.start(config)` in the orchestrator's turn (after the image being made): when
   * the LLM and an idle resident sd-server do not fit together, the sd-server is stopped first
   * (`diffusion-released`; the next image starts it again).
   */
  async startLlamaServer(config) {
    return this.#llama[START_WITH](config, (request) => this.#native.startLlama(request))
  }

  /**
   * genai-electron 0.26's manual offload: in the orchestrator's turn the LLM is drained and
   * stopped (its gateway holds chat requests, as for an image), and it stays out, whatever
   * images come, until {@link reloadLLM}. Does nothing when it is not running.
   */
  async offloadLLM() {
    await callAsync(() => this.#native.offloadLlm())
  }

  /** Brings back the LLM that {@link offloadLLM} took out, on the same port; resolves once it is back. */
  async reloadLLM() {
    await callAsync(() => this.#native.reloadLlm())
  }

  /** What the LLM and an image of `config` need, what is free, and whether an offload is needed. */
  async estimate(config = {}) {
    if (config === null || typeof config !== 'object') {
      throw new ValidationError('estimate takes an image config object', {
        suggestion: 'Pass { width, height } or nothing',
      })
    }
    const { onProgress: _p, signal: _s, initImage, mask: _m, referenceImages, ...request } = config
    // The images count, not their bytes: the VAE encodes each one (see docs/API.md).
    if (initImage != null) request.initImage = 'counted'
    if (Array.isArray(referenceImages)) request.referenceImages = referenceImages.map(() => 'counted')
    return callAsync(() => this.#native.estimate(plain('config', request)))
  }

  async wouldNeedOffload(config = {}) {
    return (await this.estimate(config)).needsOffload
  }

  /** The LLM as it was offloaded, while it is not back (or when its reload failed). */
  getSavedState() {
    const saved = this.#native.getSavedState()
    if (!saved) return undefined
    return {
      config: this.#savedConfig,
      resolved: saved.resolved,
      wasRunning: saved.wasRunning,
      savedAt: new Date(saved.savedAt),
    }
  }

  clearSavedState() {
    this.#native.clearSavedState()
    this.#savedConfig = null
  }

  /**
   * `{ phase, queue: { length, longestWaitMs }, imagesWaiting }`: the phase (`idle`, `draining`,
   * `offloading`, `generating`, `offloaded` or `reloading`), the chat requests waiting at the
   * LLM's gateway, and the images waiting for their turn.
   */
  getInfo() {
    return this.#native.getInfo()
  }
}

module.exports = { ResourceOrchestrator }
