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
 * Makes images while llama servers are loaded: when they and an image do not fit the memory
 * budget, the servers the image needs room from are offloaded (their gateways hold requests,
 * those in flight finish), the image is made, and they are reloaded on the same ports with the
 * same configs; held requests are then served. Images queued behind an offload run back to back
 * (`policy: 'collate'`) until none waits or a request has waited `maxChatWait`.
 */
class ResourceOrchestrator extends EventEmitter {
  #native
  #llamas
  #diffusion
  /** The request that started each server out, as the app passed it: what a reload repeats. */
  #savedConfigs = new Map()
  /** The listeners that forward each server's held requests, removed by {@link dispose}. */
  #forwarding = []

  /**
   * The seed's argument order; an omitted manager is the shared one. `llamaServer` may be a list
   * of managers (a chat server, an embedding server, …): each is counted, offloaded and
   * reloaded on its own; the first is the one the single-LLM calls name.
   */
  constructor(systemInfo, llamaServer, diffusionServer, modelManager, options) {
    super()
    this.#llamas = Array.isArray(llamaServer) ? [...llamaServer] : [llamaServer ?? LlamaServerManager.getInstance()]
    this.#diffusion = diffusionServer ?? DiffusionServerManager.getInstance()
    const managers = this.#llamas.every((llama) => llama instanceof LlamaServerManager)
    if (!managers || !(this.#diffusion instanceof DiffusionServerManager)) {
      throw new ValidationError("llamaServer and diffusionServer must be the library's managers", {
        suggestion:
          'Pass llamaServer (one manager or a list) and diffusionServer, or leave them out for the shared ones',
      })
    }
    if (this.#llamas.length === 0 || new Set(this.#llamas).size !== this.#llamas.length) {
      throw new ValidationError('llamaServer must name each manager once, and at least one', {
        suggestion: 'Pass a list of distinct LlamaServerManager instances',
      })
    }
    void systemInfo
    void modelManager
    const dispatch = createDispatcher(this)
    // Requests held at each server's gateway, announced here too with the server's place.
    this.#llamas.forEach((llama, server) => {
      const forward = (event) => dispatch({ ...event, server })
      for (const type of ['queued', 'dequeued']) {
        llama.on(type, forward)
        this.#forwarding.push(() => llama.off(type, forward))
      }
    })
    this.#native = callSync(
      () =>
        new native.binding.NativeResourceOrchestrator(
          this.#llamas.map((llama) => llama[NATIVE]),
          this.#diffusion[NATIVE],
          plain('options', options ?? {}),
          (event) => {
            if (event.type === 'offload') {
              this.#savedConfigs.set(event.server, this.#llamas[event.server].getStartConfig())
            }
            if (event.type === 'reload') this.#savedConfigs.delete(event.server)
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
   * server's other images are, and the listeners it added to its llama servers go. For
   * orchestrators made for a moment (a budget tried once).
   */
  dispose() {
    this.#native.dispose()
    this.#diffusion[SERVED_BY](this, false)
    for (const stop of this.#forwarding.splice(0)) stop()
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
   * the server and an idle resident sd-server do not fit together, the sd-server is stopped
   * first (`diffusion-released`; the next image starts it again). `llamaServer`: which of the
   * orchestrator's servers (default the first).
   */
  async startLlamaServer(config, llamaServer = this.#llamas[0]) {
    const server = this.#llamas.indexOf(llamaServer)
    if (server < 0) {
      throw new ValidationError("startLlamaServer starts one of the orchestrator's llama servers", {
        suggestion: 'Pass a manager given to the constructor, or none for the first',
      })
    }
    return llamaServer[START_WITH](config, (request) => this.#native.startLlama(server, request))
  }

  /**
   * genai-electron 0.26's manual offload: in the orchestrator's turn every running llama server
   * is drained and stopped (its gateway holds requests, as for an image), and they stay out,
   * whatever images come, until {@link reloadLLM}. Does nothing when none runs.
   */
  async offloadLLM() {
    await callAsync(() => this.#native.offloadLlm())
  }

  /** Brings back the servers {@link offloadLLM} took out, on the same ports; resolves once they are back. */
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

  /** The first server out (the LLM when it is), as it was offloaded, while it is not back. */
  getSavedState() {
    const saved = this.#native.getSavedState()
    return saved ? this.#withConfig(saved) : undefined
  }

  /** Every server out, as it was offloaded, in the order they went. */
  getSavedStates() {
    return this.#native.getSavedStates().map((saved) => this.#withConfig(saved))
  }

  /** A saved state as the app sees it: with the request that started the server, and a Date. */
  #withConfig(saved) {
    return {
      server: saved.server,
      config: this.#savedConfigs.get(saved.server) ?? null,
      resolved: saved.resolved,
      wasRunning: saved.wasRunning,
      savedAt: new Date(saved.savedAt),
    }
  }

  clearSavedState() {
    this.#native.clearSavedState()
    this.#savedConfigs.clear()
  }

  /**
   * `{ phase, queue: { length, longestWaitMs }, imagesWaiting }`: the phase (`idle`, `draining`,
   * `offloading`, `generating`, `offloaded` or `reloading`), the requests waiting at the llama
   * servers' gateways, and the images waiting for their turn.
   */
  getInfo() {
    return this.#native.getInfo()
  }
}

module.exports = { ResourceOrchestrator }
