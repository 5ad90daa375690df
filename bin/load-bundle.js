// Runs dist/bundle/cli.cjs as Node runs a CommonJS module, but compiled with a V8 code cache the build
// made: Node 20 keeps no compiled code between runs, and compiling was a large part of each command's
// start. There is one cache per kind of process (cli.cjs.<kind>.cache: filter, source, sink, or cqp for
// the commands), each made from a typical start of that kind, so that a process reads back the functions
// it will run and not those of the others. A cache V8 rejects (another Node, other flags), or none, is
// ignored: the code compiles as usual.
// The bins are CommonJS (bin/package.json): an ES module entry costs Node its ES module loader at start.
'use strict';
const { readFileSync, renameSync, writeFileSync } = require('node:fs');
const Module = require('node:module');
const { dirname, join } = require('node:path');
const { Script } = require('node:vm');

const file = join(__dirname, '..', 'dist', 'bundle', 'cli.cjs');
const KINDS = ['filter', 'source', 'sink'];

function readCache(path) {
  try {
    return readFileSync(path);
  } catch {
    return undefined;
  }
}

/**
 * The bundle's exports (`main`), for a process that runs `argv` (`['filter', 'map', …]`, `['replay', …]`).
 * With CQP_WRITE_CODE_CACHE=1 (set by the build), the cache of its kind is written as it exits: what it
 * read from that cache and what it compiled besides. The variable is taken out of the environment, so
 * the processes it starts (a replay's sink) do not write too.
 */
function loadBundle(argv) {
  const cache = `${file}.${KINDS.includes(argv[0]) ? argv[0] : 'cqp'}.cache`;
  const write = process.env.CQP_WRITE_CODE_CACHE === '1';
  delete process.env.CQP_WRITE_CODE_CACHE;
  const script = new Script(Module.wrap(readFileSync(file, 'utf8')), { filename: file, cachedData: readCache(cache) });
  // On Node 20 an import() in code compiled from a script's cache finds no loader: the bundle imports
  // user modules through this one (see src/core/import-module.ts).
  globalThis.cqpImportModule = (url) => import(url);
  const module = { exports: {} };
  script.runInThisContext()(module.exports, Module.createRequire(file), module, file, dirname(file));
  if (write) {
    process.on('exit', () => {
      writeFileSync(`${cache}.tmp`, script.createCachedData());
      renameSync(`${cache}.tmp`, cache);
    });
  }
  return module.exports;
}

/** Runs `argv` as a cqp command line. */
function run(argv) {
  loadBundle(argv).main(argv);
}

module.exports = { run };
