'use strict'

// scripts/check-layers.js: src/ keeps the order of layers that src/lib.rs writes down.
const test = require('node:test')
const assert = require('node:assert')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { spawnSync } = require('node:child_process')

const SCRIPT = path.join(__dirname, '..', 'scripts', 'check-layers.js')

function tree(files) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'layers-'))
  for (const [name, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, name)), { recursive: true })
    fs.writeFileSync(path.join(dir, name), text)
  }
  return dir
}

const run = (src) => spawnSync(process.execPath, [SCRIPT, src], { encoding: 'utf8' })

test('the library keeps its layers', () => {
  const result = run(path.join(__dirname, '..', 'src'))
  assert.equal(result.status, 0, result.stderr)
  assert.match(result.stdout, /^layers hold: error < .* < orchestrator < .*js$/m)
})

test('an import that goes up fails, naming the file, the line and both modules', (t) => {
  const src = tree({
    'lib.rs': '// bottom first\npub mod base;\npub mod top;\n#[cfg(test)]\nmod testing;\n',
    'base.rs': 'pub fn f() {}\n',
    'top/mod.rs': 'use crate::base::f;\npub fn g() { f() }\n',
    // Comments, strings and tests may name a higher layer.
    'base/inner.rs':
      '// see crate::top\nconst S: &str = "crate::top";\n#[cfg(test)]\nmod tests {\n    use crate::top::g;\n}\n',
    'base/tests.rs': 'use crate::top::g;\n',
    'testing.rs': 'use crate::top::g;\n',
  })
  t.after(() => fs.rmSync(src, { recursive: true, force: true }))
  const clean = run(src)
  assert.equal(clean.status, 0, clean.stderr)

  fs.writeFileSync(path.join(src, 'base.rs'), 'pub fn f() {}\n\nuse crate::{top::g};\n')
  const result = run(src)
  assert.equal(result.status, 1)
  assert.match(result.stderr, /base\.rs:3: base uses top, a layer above it/)
  assert.match(result.stderr, /1 import\(s\) go up the layers .*base < top/)
})
