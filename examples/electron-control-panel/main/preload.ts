// Electron's preload: exposes `window.api` (shared/api.ts) over ipcRenderer. Context isolation
// stays on and node integration off; vite bundles this file with shared/api.ts into one script,
// since a sandboxed preload may require only 'electron'.

import { contextBridge, ipcRenderer, type IpcRendererEvent } from 'electron'
import { makeRawApi, type PanelEvents, type Reply, type Subscribe } from '../shared/api'

const subscribe: Subscribe = (name, callback) => {
  const listener = (_event: IpcRendererEvent, payload: PanelEvents[typeof name]) => callback(payload)
  ipcRenderer.on(name, listener)
  return () => {
    ipcRenderer.removeListener(name, listener)
  }
}

const api = makeRawApi((channel, ...args) => ipcRenderer.invoke(channel, ...args) as Promise<Reply>, subscribe)

contextBridge.exposeInMainWorld('api', api)
