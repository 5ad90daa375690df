// Runs dist/bundle/cli.cjs as Node runs a CommonJS module, but compiled with the V8 code cache the build
// made (cli.cjs.cache): Node 20 keeps no compiled code between runs, and compiling was a large part of
// each command's start. A cache V8 rejects (another Node, other flags) is ignored: the code compiles as usual.
// The bins are CommonJS (bin/package.json): an ES module entry costs Node its ES module loader at start.
'use strict';
const { readFileSync, writeFileSync } = require('node:fs');
const Module = require('node:module');
const { dirname, join } = require('node:path');
const { Script } = require('node:vm');

const file = join(__dirname, '..', 'dist', 'bundle', 'cli.cjs');

function readCache() {
  try {
    return readFileSync(`${file}.cache`);
  } catch {
    return undefined;
  }
}

/** The bundle's exports (`main`). With CQP_WRITE_CODE_CACHE set (by the build), what the command compiled is written there as it exits. */
function loadBundle() {
  const writeTo = process.env.CQP_WRITE_CODE_CACHE;
  const script = new Script(Module.wrap(readFileSync(file, 'utf8')), {
    filename: file,
    cachedData: writeTo ? undefined : readCache(),
  });
  // On Node 20 an import() in code compiled from a script's cache finds no loader: the bundle imports
  // user modules through this one (see src/core/import-module.ts).
  globalThis.cqpImportModule = (url) => import(url);
  const module = { exports: {} };
  script.runInThisContext()(module.exports, Module.createRequire(file), module, file, dirname(file));
  if (writeTo) process.on('exit', () => writeFileSync(writeTo, script.createCachedData()));
  return module.exports;
}

module.exports = { loadBundle };
