'use strict'

// Builds one backend from a pinned source archive through the library's own source-build path
// (binaries.buildFromSource), printing progress to stderr and the executables as JSON to stdout.
// usage: node scripts/build-backend.js KIND ARCHIVE SHA256 SUBDIR WORK_DIR [CMAKE_ARG...]
const { binaries, configure } = require('..')

async function main() {
  const [kind, archive, sha256, subdir, workDir, ...cmakeArgs] = process.argv.slice(2)
  // The install record goes to a data folder beside the build, not the user's.
  configure({ dataDir: `${workDir}/data` })
  let last = ''
  binaries.on('binary-progress', (e) => {
    const line = `${e.stage}: ${e.detail}`
    if (line !== last) console.error(`   ${kind} ${line}`)
    last = line
  })
  const built = await binaries.buildFromSource(kind, { archive, sha256, subdir, cmakeArgs }, { workDir })
  console.log(JSON.stringify(built))
}

main().catch((err) => {
  console.error(err.message, err.details ?? '')
  process.exit(1)
})
