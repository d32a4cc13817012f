'use strict'

// Holds src/ to the order of layers written in src/lib.rs: each top-level module may use only
// the modules declared before it. A use of a later module is an import that goes up, and the
// start of a cycle; this prints each one and fails.
//
// Test code is exempt (files named tests.rs or under a tests/ folder, the `#[cfg(test)] mod
// tests { … }` block that ends a file, and the `testing` module): tests may set up any layer.
//
// Usage: node scripts/check-layers.js [src-folder]   (exit 0: the order holds)
const fs = require('node:fs')
const path = require('node:path')

const SRC = path.resolve(process.argv[2] ?? path.join(__dirname, '..', 'src'))
const EXEMPT = new Set(['testing', 'typings'])

/** The top-level modules in the order lib.rs declares them. */
function layers(libRs) {
  const order = []
  for (const match of libRs.matchAll(/^\s*(?:pub(?:\([a-z]+\))?\s+)?mod\s+([a-z_0-9]+)\s*;/gm)) {
    order.push(match[1])
  }
  return order
}

/** The Rust files of module `name`: src/name.rs and everything under src/name/. */
function filesOf(name) {
  const files = []
  const file = path.join(SRC, `${name}.rs`)
  if (fs.existsSync(file)) files.push(file)
  const walk = (dir) => {
    if (!fs.existsSync(dir)) return
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name)
      if (entry.isDirectory()) walk(full)
      else if (entry.name.endsWith('.rs')) files.push(full)
    }
  }
  walk(path.join(SRC, name))
  return files
}

function isTestFile(file) {
  const rel = path.relative(SRC, file).split(path.sep)
  return rel.at(-1) === 'tests.rs' || rel.slice(0, -1).includes('tests')
}

/** The file's code without comments, string literals and its closing test module. */
function productionCode(source) {
  const testBlock = source.search(/^#\[cfg\(test\)\]\s*\n\s*mod tests\s*\{/m)
  const code = testBlock === -1 ? source : source.slice(0, testBlock)
  return code
    .replace(/\/\*[\s\S]*?\*\//g, '')
    .replace(/\/\/.*$/gm, '')
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
}

/** Every top-level module `code` names through `crate::`, with the line it is on. */
function usesOf(code) {
  const uses = []
  const lineOf = (index) => code.slice(0, index).split('\n').length
  for (const match of code.matchAll(/crate::([a-z_0-9]+)/g)) {
    uses.push({ module: match[1], line: lineOf(match.index) })
  }
  // `use crate::{a::X, b}`: each name at the top of the braces.
  for (const match of code.matchAll(/crate::\{([^}]*(?:\{[^}]*\}[^}]*)*)\}/g)) {
    for (const part of match[1].split(',')) {
      const name = part.trim().match(/^([a-z_0-9]+)/)
      if (name) uses.push({ module: name[1], line: lineOf(match.index) })
    }
  }
  return uses
}

function check() {
  const order = layers(fs.readFileSync(path.join(SRC, 'lib.rs'), 'utf8'))
  const rank = new Map(order.map((name, i) => [name, i]))
  const problems = []
  for (const name of order) {
    if (EXEMPT.has(name)) continue
    for (const file of filesOf(name)) {
      if (isTestFile(file)) continue
      for (const use of usesOf(productionCode(fs.readFileSync(file, 'utf8')))) {
        if (!rank.has(use.module) || use.module === name || EXEMPT.has(use.module)) continue
        if (rank.get(use.module) > rank.get(name)) {
          problems.push(
            `${path.relative(process.cwd(), file)}:${use.line}: ${name} uses ${use.module}, a layer above it`,
          )
        }
      }
    }
  }
  return { order, problems }
}

if (require.main === module) {
  const { order, problems } = check()
  if (problems.length > 0) {
    console.error(problems.join('\n'))
    console.error(`\n${problems.length} import(s) go up the layers of src/lib.rs (bottom to top: ${order.join(' < ')})`)
    process.exit(1)
  }
  console.log(`layers hold: ${order.join(' < ')}`)
}

module.exports = { check, layers, usesOf, productionCode }
