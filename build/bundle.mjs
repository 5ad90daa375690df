// Bundles dist/ (tsc's output) into dist/bundle/, which the bins load: one file per entry point, plus
// chunks for what is loaded later (a component, the supervisor, the views). Start-up time was mostly
// module loading: Node resolves, reads and compiles each file (zod alone is about 90), so fewer, smaller
// files start faster. dist/bundle/ is two folders below the package, as dist/core/ is, so the paths
// the code finds from its own place (bin/cqp.js, package.json) hold in both.
import { build } from 'esbuild';
import { rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
// Chunk names change with their content: the last build's would pile up.
rmSync(`${root}dist/bundle`, { recursive: true, force: true });

await build({
  absWorkingDir: root,
  entryPoints: {
    cli: 'dist/cli.js',
    // Loaded by URL from beside the code that starts them (a worker thread, the .ts module hooks).
    'read-worker': 'dist/log/read-worker.js',
    'ts-hooks': 'dist/core/ts-hooks.js',
  },
  outdir: 'dist/bundle',
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  // Whitespace and syntax only: stack traces (CQP_DEBUG) keep their names.
  minifyWhitespace: true,
  minifySyntax: true,
  // Native addons, and packages only some commands load that are large (typescript, the AWS SDK) or
  // do not survive bundling (prom-client's modules require each other in a cycle).
  external: ['better-sqlite3', 'fs-ext', 'typescript', '@aws-sdk/*', '@smithy/*', 'prom-client'],
  // CommonJS packages (commander, yaml) call require(); an ES module has none of its own.
  banner: { js: "import { createRequire as __cqpCreateRequire } from 'node:module'; const require = __cqpCreateRequire(import.meta.url);" },
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
  logLevel: 'warning',
});
