'use strict'

// What the benchmarks share: the cache folder, the real backends, the anchor library, medians.
const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const CACHE = process.env.GENAI_ELECTRON_DEV_CACHE ?? path.join(os.homedir(), '.cache', 'genai-electron-dev')

/** The real backends and test models: `npm run backends` (cached), its JSON line parsed. */
function backends() {
  const run = spawnSync('bash', [path.join(__dirname, '..', 'scripts', 'backends.sh')], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  if (run.status !== 0) throw new Error('npm run backends failed')
  return JSON.parse(run.stdout.trim().split('\n').pop())
}

/** genai-electron 0.26's `dist` folder, fetched once with `npm pack` (it runs under plain Node). */
function anchorDist() {
  const dir = path.join(CACHE, 'bench', 'genai-electron-0.26.0')
  if (!fs.existsSync(path.join(dir, 'package', 'dist', 'download', 'Downloader.js'))) {
    fs.mkdirSync(dir, { recursive: true })
    const pack = spawnSync('npm', ['pack', 'genai-electron@0.26.0', '--pack-destination', dir], { encoding: 'utf8' })
    if (pack.status !== 0) throw new Error(`npm pack failed: ${pack.stderr}`)
    spawnSync('tar', ['-xzf', path.join(dir, 'genai-electron-0.26.0.tgz'), '-C', dir])
  }
  return path.join(dir, 'package', 'dist')
}

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]

module.exports = { CACHE, backends, anchorDist, median }
