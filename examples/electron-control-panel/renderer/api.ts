// `api`: window.api as Electron's preload exposes it, or, in a browser, the same API bridged over
// HTTP + SSE to the web mode's server (main/web.ts). Errors arrive as PanelError with their code.

import { EVENT_NAMES, makeRawApi, unwrapApi, type PanelEventName, type RawApi, type Reply } from '../shared/api'

declare global {
  interface Window {
    api?: RawApi
  }
}

function webBridge(): RawApi {
  const listeners = new Map<PanelEventName, Set<(payload: never) => void>>()
  const events = new EventSource('events')
  for (const name of EVENT_NAMES) {
    events.addEventListener(name, (message) => {
      const payload = JSON.parse((message as MessageEvent<string>).data) as never
      for (const callback of listeners.get(name) ?? []) callback(payload)
    })
  }
  return makeRawApi(
    async (channel, ...args): Promise<Reply> => {
      const response = await fetch(`ipc/${encodeURIComponent(channel)}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(args),
      })
      if (!response.ok) {
        return { ok: false, error: { name: 'Error', code: `HTTP_${response.status}`, message: await response.text() } }
      }
      return (await response.json()) as Reply
    },
    (name, callback) => {
      if (!listeners.has(name)) listeners.set(name, new Set())
      const set = listeners.get(name)!
      set.add(callback as (payload: never) => void)
      return () => set.delete(callback as (payload: never) => void)
    },
  )
}

export const mode: 'electron' | 'web' = window.api ? 'electron' : 'web'
export const api = unwrapApi(window.api ?? webBridge())
