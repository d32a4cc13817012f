'use strict'

// What the Windows tier's tests share (they run in Windows Node under Wine: scripts/test-windows.sh).

const http = require('node:http')

/**
 * An HTTP request with node:http. Windows Node's `fetch` (undici) cannot connect to 127.0.0.1
 * under Wine 8 ("connect UNKNOWN"), while node:http, and the library's own client, can.
 * Resolves with `{ status, headers, text, json }`.
 */
function request(port, path, { method = 'GET', body, headers = {} } = {}) {
  const payload = body === undefined ? undefined : JSON.stringify(body)
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        path,
        method,
        headers: payload ? { 'content-type': 'application/json', ...headers } : headers,
      },
      (res) => {
        let text = ''
        res.setEncoding('utf8')
        res.on('data', (d) => (text += d))
        res.on('end', () =>
          resolve({ status: res.statusCode, headers: res.headers, text, json: () => JSON.parse(text) }),
        )
      },
    )
    req.on('error', reject)
    req.end(payload)
  })
}

/** Whether a process of that id exists (Windows Node opens it: no signal is sent). */
function alive(pid) {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

/**
 * Waits until `pid` is gone, polling against a deadline: the process is not our child (a server
 * of a killed parent), so no event tells. Resolves with whether it went.
 */
async function gone(pid, ms) {
  const deadline = Date.now() + ms
  while (alive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
  return !alive(pid)
}

module.exports = { request, alive, gone }
