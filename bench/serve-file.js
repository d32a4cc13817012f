'use strict'

// Serves one file on 127.0.0.1 (a separate process, so the server does not compete with the
// downloader under test for its event loop). Prints the port. With a rate (MiB/s) as the second
// argument, the body is paced like a real link.
const fs = require('node:fs')
const http = require('node:http')

const file = process.argv[2]
const rate = Number(process.argv[3] ?? 0) * 2 ** 20
const size = fs.statSync(file).size

function paced(res) {
  const stream = fs.createReadStream(file, { highWaterMark: 1 << 20 })
  const start = Date.now()
  let sent = 0
  stream.on('data', (chunk) => {
    stream.pause()
    sent += chunk.length
    const due = start + (sent / rate) * 1000
    res.write(chunk, () => setTimeout(() => stream.resume(), Math.max(0, due - Date.now())))
  })
  stream.on('end', () => res.end())
  res.on('close', () => stream.destroy())
}

http
  .createServer((_req, res) => {
    res.writeHead(200, { 'content-length': size })
    if (rate > 0) paced(res)
    else fs.createReadStream(file, { highWaterMark: 1 << 20 }).pipe(res)
  })
  .listen(0, '127.0.0.1', function () {
    console.log(this.address().port)
  })
