// Bundles dist/ (tsc's output) into dist/bundle/, which the bins load. Start-up time was mostly module
// loading and compiling: Node resolves, reads and compiles each file (zod alone is about 90), and Node
// 20 keeps no compiled code between runs. So the commands are one CommonJS file, cli.cjs, that the bins
// run through bin/load-bundle.cjs with a V8 code cache made here (cli.cjs.cache): the functions a start
// compiles are read back instead. Its modules still run only when a command needs them (esbuild wraps
// each in a function called on first import). dist/bundle/ is two folders below the package, as
// dist/core/ is, so the paths the code finds from its own place (bin/cqp.js, package.json) hold in both.
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
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
  // Native addons, and packages only some commands load that are large (typescript, the AWS SDK) or
  // do not survive bundling (prom-client's modules require each other in a cycle).
  external: ['better-sqlite3', 'fs-ext', 'typescript', '@aws-sdk/*', '@smithy/*', 'prom-client', 'pg'],
  logLevel: 'warning',
};

await build({
  ...common,
  entryPoints: { cli: 'dist/cli.js' },
  outExtension: { '.js': '.cjs' },
  format: 'cjs',
  // A CommonJS file has no import.meta: the code finds files beside its own (the worker, the hooks, package.json) from its URL.
  define: { 'import.meta.url': '__cqpFileUrl' },
  banner: { js: "const __cqpFileUrl = require('node:url').pathToFileURL(__filename).href;" },
  plugins: [
    {
      // zod's translations of its messages (about 300 kB): cqp uses the English ones, which zod loads apart.
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

// The code cache: what one event through `cqp-filter map` compiles (the start every component process
// shares), written by the loader when CQP_WRITE_CODE_CACHE names the file.
execFileSync(process.execPath, [`${root}bin/cqp-filter.js`, 'map', 'e.b = 1'], {
  input: '{"a":1}\n',
  env: { ...process.env, CQP_WRITE_CODE_CACHE: `${root}dist/bundle/cli.cjs.cache` },
  stdio: ['pipe', 'ignore', 'inherit'],
});
