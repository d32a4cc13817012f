'use strict'

// The package as a Windows user installs it (packed and installed by scripts/test-windows.sh):
// the main package loads the addon from its win32-x64-msvc platform package.

const test = require('node:test')
const assert = require('node:assert/strict')
const path = require('node:path')

test('installed from its tarballs, the package loads the addon of genai-electron-win32-x64-msvc', async () => {
  const app = process.env.GENAI_ELECTRON_TEST_WINDOWS_APP
  assert.ok(app, 'GENAI_ELECTRON_TEST_WINDOWS_APP names the project the package was installed into')
  const lib = require(path.join(app, 'node_modules', 'genai-electron'))
  const caps = await lib.systemInfo.detect() // the addon is loaded at the first call
  assert.equal(caps.platform, 'win32')
  const addon = path.join(app, 'node_modules', 'genai-electron-win32-x64-msvc', 'genai-electron.win32-x64-msvc.node')
  assert.ok(
    require.cache[addon],
    `loaded from ${addon}: ${Object.keys(require.cache).filter((k) => k.endsWith('.node'))}`,
  )
  assert.equal(typeof lib.ValidationError, 'function')
})
