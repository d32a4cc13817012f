// Electron's main process: one window, the panel's handlers on ipcMain, the servers stopped
// before the app quits (no llama-server or sd-server left holding memory).

import path from 'node:path'
import { app, BrowserWindow, ipcMain } from 'electron'
import { registerHandlers, type Handlers } from './handlers'

let window: BrowserWindow | null = null
let handlers: Handlers | null = null

function createWindow() {
  window = new BrowserWindow({
    width: 1280,
    height: 860,
    title: 'genai-electron control panel',
    webPreferences: {
      preload: path.join(__dirname, '../../preload/preload.js'),
      contextIsolation: true,
      nodeIntegration: false,
      sandbox: true,
    },
  })
  void window.loadFile(path.join(__dirname, '../../renderer/index.html'))
  window.on('closed', () => (window = null))
}

app.whenReady().then(() => {
  handlers = registerHandlers(ipcMain, (name, payload) => window?.webContents.send(name, payload))
  createWindow()
  app.on('activate', () => {
    if (BrowserWindow.getAllWindows().length === 0) createWindow()
  })
})

app.on('window-all-closed', () => {
  if (process.platform !== 'darwin') app.quit()
})

let quitting = false
app.on('before-quit', (event) => {
  if (quitting || !handlers) return
  event.preventDefault()
  quitting = true
  void handlers.dispose().finally(() => app.quit())
})
