'use strict'

// Serves one file on 127.0.0.1 (a separate process, so the server does not compete with the
// downloader under test for its event loop). Prints the port.
const fs = require('node:fs')
const http = require('node:http')

const file = process.argv[2]
const size = fs.statSync(file).size
http
  .createServer((req, res) => {
    res.writeHead(200, { 'content-length': size })
    fs.createReadStream(file, { highWaterMark: 1 << 20 }).pipe(res)
  })
  .listen(0, '127.0.0.1', function () {
    console.log(this.address().port)
  })
