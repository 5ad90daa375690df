// Runs one of the bundles in dist/bundle/ as Node runs a CommonJS module, but compiled with a V8 code
// cache the build made: Node 20 keeps no compiled code between runs, and compiling was a large part of
// each command's start. A component's process (`cqp-filter …`, `cqp filter …`: the first argument is
// its kind) runs its kind's bundle, filter.cjs, source.cjs or sink.cjs, which hold that kind's
// components alone; every other command runs cli.cjs. Each has its cache (<bundle>.cache), made from a
// typical start of that kind, so that a process reads back the functions it will run and not those of
// the others. A cache V8 rejects (another Node, other flags), or none, is ignored: the code compiles as
// usual.
// The bins are CommonJS (bin/package.json): an ES module entry costs Node its ES module loader at start.
'use strict';
const { readFileSync, renameSync, rmSync, writeFileSync } = require('node:fs');
const Module = require('node:module');
const { dirname, join } = require('node:path');
const { Script } = require('node:vm');

const KINDS = ['filter', 'source', 'sink'];

function readCache(path) {
  try {
    return readFileSync(path);
  } catch {
    return undefined;
  }
}

/**
 * Writes the cache of `script` to `path` as a whole: through a file of this process's own, renamed over
 * it, so that two builds at once (or a reader) never see half of one. A folder that cannot be written
 * (an install read-only) leaves the cache as it was: the code then compiles as usual.
 */
function writeCache(script, path) {
  const temporary = `${path}.${process.pid}.tmp`;
  try {
    writeFileSync(temporary, script.createCachedData());
    renameSync(temporary, path);
  } catch (error) {
    rmSync(temporary, { force: true });
    process.stderr.write(`cqp: the code cache ${path} was not written: ${error.message}\n`);
  }
}

/**
 * The exports (`main`) of the bundle for a process that runs `argv` (`['filter', 'map', …]`,
 * `['replay', …]`). With CQP_WRITE_CODE_CACHE=1 (set by the build), its cache is written as it exits:
 * what it read from that cache and what it compiled besides. The variable is taken out of the
 * environment, so the processes it starts (a replay's sink) do not write too.
 */
function loadBundle(argv) {
  const file = join(__dirname, '..', 'dist', 'bundle', `${KINDS.includes(argv[0]) ? argv[0] : 'cli'}.cjs`);
  const cache = `${file}.cache`;
  const write = process.env.CQP_WRITE_CODE_CACHE === '1';
  delete process.env.CQP_WRITE_CODE_CACHE;
  const script = new Script(Module.wrap(readFileSync(file, 'latin1')), { filename: file, cachedData: readCache(cache) });
  // On Node 20 an import() in code compiled from a script's cache finds no loader: the bundle imports
  // user modules through this one (see src/core/import-module.ts).
  globalThis.cqpImportModule = (url) => import(url);
  const module = { exports: {} };
  script.runInThisContext()(module.exports, Module.createRequire(file), module, file, dirname(file));
  if (write) process.on('exit', () => writeCache(script, cache));
  return module.exports;
}

/** Runs `argv` as a cqp command line. */
function run(argv) {
  loadBundle(argv).main(argv);
}

module.exports = { run };
