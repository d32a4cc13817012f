// The panel as a web page: serves the built renderer and bridges `window.api` over HTTP + SSE to
// the same handlers, registered on a fake ipcMain. Binds 127.0.0.1 only.
//
//   node dist/node/main/web.js [--port 5175]     (port 0: any free port)

import fs from 'node:fs'
import http from 'node:http'
import path from 'node:path'
import type { AddressInfo } from 'node:net'
import { registerHandlers, type IpcMainLike } from './handlers'
import type { PanelEventName, PanelEvents } from '../shared/api'

const MAX_BODY_BYTES = 1 << 20
const STATIC_ROOT = path.join(__dirname, '../../renderer')
const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
}

type Listener = (event: unknown, ...args: unknown[]) => unknown

/** Starts the web panel; resolves with its URL and a `close` that stops the servers too. */
export async function startWebPanel(port = 5175): Promise<{ url: string; close(): Promise<void> }> {
  const listeners = new Map<string, Listener>()
  const ipcMain: IpcMainLike = {
    handle: (channel, listener) => listeners.set(channel, listener),
    removeHandler: (channel) => listeners.delete(channel),
  }
  const clients = new Set<http.ServerResponse>()
  const emit = <E extends PanelEventName>(name: E, payload: PanelEvents[E]) => {
    const frame = `event: ${name}\ndata: ${JSON.stringify(payload)}\n\n`
    for (const client of clients) client.write(frame)
  }
  const handlers = registerHandlers(ipcMain, emit)

  const server = http.createServer((req, res) => {
    // Another site's page cannot reach these handlers: no CORS headers are ever sent, and a
    // DNS-rebound name in Host is refused.
    const host = (req.headers.host ?? '').replace(/:\d+$/, '')
    if (host !== '127.0.0.1' && host !== 'localhost') return send(res, 403, 'forbidden host')
    const url = new URL(req.url ?? '/', 'http://127.0.0.1')
    if (url.pathname === '/events' && req.method === 'GET') return openEvents(res, clients)
    if (url.pathname.startsWith('/ipc/') && req.method === 'POST') {
      return void invoke(listeners, decodeURIComponent(url.pathname.slice(5)), req, res)
    }
    if (req.method === 'GET') return serveStatic(url.pathname, res)
    send(res, 405, 'method not allowed')
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, '127.0.0.1', resolve)
  })
  const { port: bound } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${bound}/`,
    async close() {
      for (const client of clients) client.end()
      server.closeAllConnections()
      await new Promise((resolve) => server.close(resolve))
      await handlers.dispose()
    },
  }
}

function send(res: http.ServerResponse, status: number, text: string) {
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8' }).end(text)
}

function openEvents(res: http.ServerResponse, clients: Set<http.ServerResponse>) {
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' })
  res.write(': connected\n\n')
  clients.add(res)
  res.on('close', () => clients.delete(res))
}

/** POST /ipc/<channel> with the arguments as a JSON array; answers the handler's Reply. */
async function invoke(listeners: Map<string, Listener>, channel: string, req: http.IncomingMessage, res: http.ServerResponse) {
  const listener = listeners.get(channel)
  if (!listener) return send(res, 404, `no handler for ${channel}`)
  if (!(req.headers['content-type'] ?? '').startsWith('application/json')) return send(res, 415, 'send application/json')
  // The rest of a refused body is read and dropped, so the client gets the answer, not a reset.
  if (Number(req.headers['content-length'] ?? 0) > MAX_BODY_BYTES) {
    req.resume()
    return send(res, 413, 'body too large')
  }
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of req) {
    size += chunk.length
    if (size <= MAX_BODY_BYTES) chunks.push(chunk)
  }
  if (size > MAX_BODY_BYTES) return send(res, 413, 'body too large')
  let args: unknown
  try {
    args = JSON.parse(Buffer.concat(chunks).toString('utf8') || '[]')
  } catch {
    return send(res, 400, 'the body is not JSON')
  }
  if (!Array.isArray(args)) return send(res, 400, 'the body must be a JSON array of arguments')
  const reply = await listener({}, ...args)
  res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(reply))
}

function serveStatic(pathname: string, res: http.ServerResponse) {
  const file = path.join(STATIC_ROOT, path.normalize(pathname === '/' ? '/index.html' : pathname))
  if (!file.startsWith(STATIC_ROOT + path.sep)) return send(res, 403, 'forbidden')
  fs.readFile(file, (error, data) => {
    if (error) return send(res, 404, 'not found')
    res.writeHead(200, { 'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream' }).end(data)
  })
}

if (require.main === module) {
  const flag = process.argv.indexOf('--port')
  const port = flag > 0 ? Number(process.argv[flag + 1]) : 5175
  startWebPanel(port).then(
    (panel) => {
      console.log(`control panel: ${panel.url}`)
      const shutdown = () => void panel.close().finally(() => process.exit(0))
      process.once('SIGINT', shutdown)
      process.once('SIGTERM', shutdown)
    },
    (error) => {
      console.error(`cannot start the web panel: ${error.message}`)
      process.exit(1)
    },
  )
}
