// Baseline for bench/run.py: npm's own fetch-and-extract (pacote) of one package version.
//
//   node pacote_extract.js PACOTE_DIR SPEC DEST REGISTRY CACHE
//
// PACOTE_DIR is the installed package (node_modules/pacote); CACHE a fresh, empty cache
// directory, so every run downloads the tarball. Prints one JSON line on success.
'use strict'

const [pacoteDir, spec, dest, registry, cache] = process.argv.slice(2)
if (!cache) {
  console.error('usage: node pacote_extract.js PACOTE_DIR SPEC DEST REGISTRY CACHE')
  process.exit(2)
}
const pacote = require(pacoteDir)

pacote.extract(spec, dest, { registry, cache, preferOnline: true })
  .then((result) => {
    process.stdout.write(JSON.stringify({ resolved: result.resolved, integrity: result.integrity }) + '\n')
  })
  .catch((err) => {
    console.error(`pacote: ${err && err.stack ? err.stack : err}`)
    process.exit(1)
  })
