'use strict'

// The package as users install it: the main package and the platform package packed with
// `npm pack` (the platform one with the built .node in it, as `napi prepublish` lays it out),
// installed into an empty project outside this repository, then loaded from CommonJS and ESM,
// called, and compiled against with tsc --strict. A file the package needs that `files` leaves
// out fails here.

const test = require('node:test')
const assert = require('node:assert/strict')
const { execFileSync, spawnSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { ROOT } = require('./helpers')

const PLATFORM = 'linux-x64-gnu'
const skip =
  process.platform === 'linux' && process.arch === 'x64' ? false : `the packed platform package here is ${PLATFORM}`

function npm(args, cwd) {
  return execFileSync('npm', [...args, '--no-audit', '--no-fund', '--loglevel=error'], { cwd, encoding: 'utf8' })
}

/** Packs the folder into `into`; returns the tarball's path. */
function pack(dir, into) {
  const name = JSON.parse(npm(['pack', '--json', '--pack-destination', into], dir))[0].filename
  return path.join(into, name)
}

test('packed and installed into an empty project, it loads from CJS and ESM, works, and type-checks', { skip }, () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'genai-electron-package-'))
  try {
    const tarballs = path.join(work, 'tarballs')
    fs.mkdirSync(tarballs)
    const main = pack(ROOT, tarballs)
    const platformDir = path.join(work, PLATFORM)
    fs.cpSync(path.join(ROOT, 'npm', PLATFORM), platformDir, { recursive: true })
    const node = `genai-electron.${PLATFORM}.node`
    fs.copyFileSync(path.join(ROOT, node), path.join(platformDir, node))
    const platform = pack(platformDir, tarballs)

    const app = path.join(work, 'app')
    fs.mkdirSync(app)
    fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true }))
    // @types/node for the typings' EventEmitter; from npm's cache when it has it.
    npm(
      [
        'install',
        '--prefer-offline',
        main,
        platform,
        `@types/node@${require(path.join(ROOT, 'node_modules', '@types', 'node', 'package.json')).version}`,
      ],
      app,
    )
    const installed = fs.readdirSync(path.join(app, 'node_modules', 'genai-electron')).sort()
    assert.deepEqual(installed, [
      'README.md',
      'binding.d.ts',
      'binding.js',
      'index.d.ts',
      'index.js',
      'index.mjs',
      'lib',
      'package.json',
      'shapes.d.ts',
    ])

    const env = { ...process.env, GENAI_ELECTRON_DATA_DIR: path.join(work, 'data'), NODE_PATH: '' }
    const run = (args) => spawnSync(process.execPath, args, { cwd: app, env, encoding: 'utf8' })
    const cjs = run([
      '-e',
      `
      const { systemInfo, ValidationError, LogManager } = require('genai-electron')
      systemInfo.detect().then((caps) => console.log(caps.cpu.logicalCores > 0, typeof ValidationError, typeof LogManager.parseEntry))`,
    ])
    assert.equal(cjs.status, 0, cjs.stderr)
    assert.equal(cjs.stdout.trim(), 'true function function')
    // Loaded from the installed copy, not from this repository.
    const where = run(['-p', "require.resolve('genai-electron')"])
    assert.equal(where.stdout.trim(), path.join(app, 'node_modules', 'genai-electron', 'index.js'))
    const esm = run([
      '--input-type=module',
      '-e',
      `
      import { systemInfo, ResourceOrchestrator } from 'genai-electron'
      const caps = await systemInfo.detect()
      console.log(caps.memory.total > 0, typeof ResourceOrchestrator)`,
    ])
    assert.equal(esm.status, 0, esm.stderr)
    assert.equal(esm.stdout.trim(), 'true function')

    fs.writeFileSync(
      path.join(app, 'usage.ts'),
      `
      import { systemInfo, llamaServer, type SystemCapabilities, type ServerInfo } from 'genai-electron'
      async function main(): Promise<void> {
        const caps: SystemCapabilities = await systemInfo.detect()
        const info: ServerInfo = llamaServer.getInfo()
        console.log(caps.cpu.model, info.status, info.health)
      }
      void main()
    `,
    )
    fs.writeFileSync(
      path.join(app, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          strict: true,
          noEmit: true,
          module: 'nodenext',
          moduleResolution: 'nodenext',
          target: 'es2022',
          types: ['node'],
          skipLibCheck: false,
        },
        files: ['usage.ts'],
      }),
    )
    const tsc = run([path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'])
    assert.equal(tsc.status, 0, tsc.stdout + tsc.stderr)
  } finally {
    fs.rmSync(work, { recursive: true, force: true })
  }
})
