// Bundles dist/ (tsc's output) into dist/bundle/, which the bins load. Start-up time was mostly module
// loading and compiling: Node resolves, reads and compiles each file (zod alone is about 90), and Node
// 20 keeps no compiled code between runs. So the commands are CommonJS files that the bins run through
// bin/load-bundle.js with V8 code caches made here (<bundle>.cjs.cache): the functions a start compiles
// are read back instead. There is one bundle per kind of process: cli.cjs has every command (cqp run,
// replay, …), filter.cjs, source.cjs and sink.cjs a component's process of that kind alone (its kind's
// components and the runtime), so that a stage reads and deserializes a third of the code, not all of it.
// Their modules still run only when a command needs them (esbuild wraps each module a command imports
// with import() in a function called on first import). dist/bundle/ is two folders below the package,
// as dist/core/ is, so the paths the code finds from its own place (bin/cqp.js, package.json) hold in all.
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
// Chunk names change with their content: the last build's would pile up.
rmSync(`${root}dist/bundle`, { recursive: true, force: true });

const common = {
  absWorkingDir: root,
  outdir: 'dist/bundle',
  bundle: true,
  platform: 'node',
  target: 'node20',
  // Whitespace and syntax only: stack traces (CQP_DEBUG) keep their names.
  minifyWhitespace: true,
  minifySyntax: true,
  // Native addons, and packages only some commands load that are large (typescript, the AWS SDK, the NATS client) or
  // do not survive bundling (prom-client's modules require each other in a cycle).
  external: ['better-sqlite3', 'fs-ext', 'typescript', '@aws-sdk/*', '@smithy/*', '@nats-io/*', 'prom-client', 'pg'],
  logLevel: 'warning',
};

// The entry of each bundle, by the name bin/load-bundle.js knows it by.
const ENTRIES = { cli: 'dist/cli.js', filter: 'dist/filters/main.js', source: 'dist/sources/main.js', sink: 'dist/sinks/main.js' };

await build({
  ...common,
  entryPoints: ENTRIES,
  outExtension: { '.js': '.cjs' },
  format: 'cjs',
  // A CommonJS file has no import.meta: the code finds files beside its own (the worker, the hooks, package.json) from its URL.
  // The version, so that a start need not read package.json for it (src/core/version.ts).
  define: { 'import.meta.url': '__cqpFileUrl', CQP_BUNDLED_VERSION: JSON.stringify(JSON.parse(readFileSync(`${root}package.json`, 'utf8')).version) },
  banner: { js: "const __cqpFileUrl = require('node:url').pathToFileURL(__filename).href;" },
  plugins: [
    {
      // commander requires node:child_process as it loads, for executable subcommands, which cqp has
      // none of; that module loads node:net and more, a tenth of a component's start. It loads on first use.
      name: 'lazy-child-process',
      setup(b) {
        b.onLoad({ filter: /[\\/]commander[\\/]lib[\\/]command\.js$/ }, async (args) => {
          const text = await readFile(args.path, 'utf8');
          const eager = "const childProcess = require('node:child_process');";
          if (!text.includes(eager)) throw new Error(`${args.path}: no "${eager}" to make lazy (a new commander?): update build/bundle.mjs`);
          return { contents: text.replace(eager, "const childProcess = { spawn: (...args) => require('node:child_process').spawn(...args) };"), loader: 'js' };
        });
      },
    },
    {
      // acorn (a map or where expression's parser) builds its Unicode property tables for regular
      // expressions as it loads, for six ECMAScript versions: 1.5 ms of such a stage's start, for
      // tables only an expression with a regular expression literal uses. They are built when first used.
      name: 'lazy-acorn-unicode',
      setup(b) {
        b.onLoad({ filter: /[\\/]acorn[\\/]dist[\\/]acorn\.mjs$/ }, async (args) => {
          let text = await readFile(args.path, 'utf8');
          const edits = [
            ['for (var i = 0, list = [9, 10, 11, 12, 13, 14]; i < list.length; i += 1) {\n  var ecmaVersion = list[i];\n\n  buildUnicodeData(ecmaVersion);\n}\n', ''],
            [
              'this.unicodeProperties = data[parser.options.ecmaVersion >= 14 ? 14 : parser.options.ecmaVersion];',
              'var unicodeVersion = parser.options.ecmaVersion >= 14 ? 14 : parser.options.ecmaVersion;\n  if (unicodeVersion >= 9 && !data[unicodeVersion]) buildUnicodeData(unicodeVersion);\n  this.unicodeProperties = data[unicodeVersion];',
            ],
          ];
          for (const [from, to] of edits) {
            if (!text.includes(from)) throw new Error(`${args.path}: no "${from.split('\n')[0]}" to make lazy (a new acorn?): update build/bundle.mjs`);
            text = text.replace(from, to);
          }
          return { contents: text, loader: 'js' };
        });
      },
    },
    {
      // zod's translations of its messages (about 300 kB): cqp uses the English ones, which zod loads apart.
      // (The parts of zod cqp never calls are left out as unused: cqp imports it as a namespace, see eslint.config.js.)
      name: 'no-zod-locales',
      setup(b) {
        b.onResolve({ filter: /\/locales\/index\.js$/ }, (args) => (args.importer.includes('/zod/') ? { path: args.path, namespace: 'empty' } : undefined));
        b.onLoad({ filter: /.*/, namespace: 'empty' }, () => ({ contents: 'export {};', loader: 'js' }));
      },
    },
  ],
});

// Loaded by URL from beside the code that starts them (a worker thread, the .ts module hooks): ES modules.
await build({
  ...common,
  entryPoints: { 'read-worker': 'dist/log/read-worker.js', 'ts-hooks': 'dist/core/ts-hooks.js' },
  format: 'esm',
  splitting: true,
  // CommonJS packages call require(); an ES module has none of its own.
  banner: { js: "import { createRequire as __cqpCreateRequire } from 'node:module'; const require = __cqpCreateRequire(import.meta.url);" },
});

// The code caches, one per bundle (see bin/load-bundle.js), each written by the loader from a typical
// start of its kind (CQP_WRITE_CODE_CACHE=1): one event through `cqp-filter map` (the start every
// stage shares), a log read by `cqp-source log`, a views sink reading a log as a replay runs it, and
// `cqp replay` itself. They run in a scratch folder on a few demo events.
const scratch = mkdtempSync(join(tmpdir(), 'cqp-code-cache-'));
try {
  const bin = (name) => `${root}bin/${name}.js`;
  const run = (name, args, { input, cache = true } = {}) =>
    execFileSync(process.execPath, [bin(name), ...args], {
      cwd: scratch,
      input: input ?? '',
      env: { ...process.env, ...(cache ? { CQP_WRITE_CODE_CACHE: '1' } : {}) },
      // What they print is not wanted; a failure's message holds its stderr.
      stdio: 'pipe',
    });
  const events = run('cqp-source', ['demo', '--count', '200'], { cache: false });
  run('cqp-sink', ['log', '--path', 'events.log'], { input: events, cache: false });
  writeFileSync(
    join(scratch, 'views.yaml'),
    'views:\n  - table: ice_creams\n    key: header.rel.id\n    columns:\n      name: payload.name\n      price: { path: payload.price, type: real }\n    on:\n      create.ice_cream: upsert\n      update.ice_cream: upsert\n      delete.ice_cream: delete\n',
  );
  writeFileSync(join(scratch, 'pipeline.yaml'), 'name: code-cache\nsource: { type: stdin }\nsinks:\n  - { name: views, type: sqlite, db: views.db, views: views.yaml }\n');
  run('cqp-filter', ['map', 'e.b = 1'], { input: '{"a":1}\n' });
  run('cqp-source', ['log', '--path', 'events.log', '--from', '1', '--until', '200']);
  run('cqp-sink', ['sqlite', '--db', 'sink.db', '--views', 'views.yaml', '--read-log', 'events.log', '--from', '1', '--until', '200', '--building']);
  run('cqp', ['replay', '--log', 'events.log', '--pipeline', 'pipeline.yaml']);
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
