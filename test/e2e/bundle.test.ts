/**
 * The bundles the bins run (build/bundle.mjs, bin/load-bundle.js): a component's process runs its
 * kind's bundle, which holds no other kind's code; a missing, unreadable or rejected code cache only
 * makes the start slower; writing a cache (the build does, CQP_WRITE_CODE_CACHE=1) never leaves half
 * of one, nor fails the command.
 */
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { collect } from '../helpers/cli.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const bundles = join(root, 'dist', 'bundle');

/** esbuild names each module it wraps by its path: the modules a bundle holds. */
function holds(bundle: string, module: string): boolean {
  return readFileSync(join(bundles, bundle), 'latin1').includes(`"${module}"`);
}

describe('one bundle per kind of process', () => {
  it.each([
    ['filter.cjs', 'dist/filters/map.js', ['dist/sinks/sqlite.js', 'dist/sources/kinesis.js', 'dist/supervisor/replay.js', 'dist/views/store.js']],
    ['source.cjs', 'dist/sources/log.js', ['dist/filters/map.js', 'dist/sinks/sqlite.js', 'dist/supervisor/replay.js']],
    ['sink.cjs', 'dist/sinks/sqlite.js', ['dist/filters/map.js', 'dist/sources/kinesis.js', 'dist/supervisor/replay.js']],
  ])('%s holds its kind (%s) and none of %j, which cli.cjs holds', (bundle, own, others) => {
    expect(holds(bundle, own)).toBe(true);
    for (const module of others) {
      expect(holds(bundle, module), `${bundle} holds ${module}`).toBe(false);
      expect(holds('cli.cjs', module), `cli.cjs holds ${module}`).toBe(true);
    }
  });

  it('each bundle has its code cache', () => {
    const files = readdirSync(bundles);
    for (const bundle of ['cli.cjs', 'filter.cjs', 'source.cjs', 'sink.cjs']) expect(files).toContain(`${bundle}.cache`);
  });
});

describe('the code caches', () => {
  // A copy of what an install holds (bin/, dist/bundle/, package.json), whose caches the tests change.
  let pkg: string;
  beforeAll(() => {
    pkg = mkdtempSync(join(tmpdir(), 'cqp-bundle-'));
    cpSync(join(root, 'bin'), join(pkg, 'bin'), { recursive: true });
    cpSync(bundles, join(pkg, 'dist', 'bundle'), { recursive: true });
    cpSync(join(root, 'package.json'), join(pkg, 'package.json'));
    symlinkSync(join(root, 'node_modules'), join(pkg, 'node_modules'));
  });
  afterAll(() => rmSync(pkg, { recursive: true, force: true }));

  const cache = (): string => join(pkg, 'dist', 'bundle', 'filter.cjs.cache');
  const map = (env: NodeJS.ProcessEnv = {}): ReturnType<typeof spawnSync> =>
    spawnSync(process.execPath, [join(pkg, 'bin', 'cqp-filter.js'), 'map', 'e.b = 1'], { input: '{"a":1}\n', encoding: 'utf8', env: { ...process.env, ...env } });

  it('a cache V8 rejects, or none, is passed over: the command runs as with one', () => {
    writeFileSync(cache(), 'not a code cache');
    expect(map()).toMatchObject({ status: 0, stdout: '{"a":1,"b":1}\n', stderr: '' });
    rmSync(cache());
    expect(map()).toMatchObject({ status: 0, stdout: '{"a":1,"b":1}\n', stderr: '' });
    const cqp = spawnSync(process.execPath, [join(pkg, 'bin', 'cqp.js'), 'filter', 'map', 'e.b = 2'], { input: '{"a":1}\n', encoding: 'utf8' });
    expect(cqp).toMatchObject({ status: 0, stdout: '{"a":1,"b":2}\n', stderr: '' });
  });

  it('processes writing the cache at once leave one whole cache and no file of their own', async () => {
    rmSync(cache(), { force: true });
    const runs = Array.from({ length: 4 }, () => {
      const child = spawn(process.execPath, [join(pkg, 'bin', 'cqp-filter.js'), 'map', 'e.b = 1'], { env: { ...process.env, CQP_WRITE_CODE_CACHE: '1' } });
      child.stdin.end('{"a":1}\n');
      return collect(child);
    });
    for (const r of await Promise.all(runs)) expect(r).toMatchObject({ status: 0, stdout: '{"a":1,"b":1}\n', stderr: '' });
    expect(readdirSync(join(pkg, 'dist', 'bundle')).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    expect(readFileSync(cache()).length).toBeGreaterThan(1000);
    expect(map()).toMatchObject({ status: 0, stdout: '{"a":1,"b":1}\n', stderr: '' });
  });

  it('a cache that cannot be written is said so, and the command still succeeds', () => {
    rmSync(cache(), { force: true });
    // A folder in its place: the rename over it fails as in a folder the user cannot write (as root, every file can be).
    mkdirSync(cache());
    const r = map({ CQP_WRITE_CODE_CACHE: '1' });
    expect(r).toMatchObject({ status: 0, stdout: '{"a":1,"b":1}\n' });
    expect(r.stderr).toMatch(/^cqp: the code cache \S+filter\.cjs\.cache was not written: /);
    expect(readdirSync(join(pkg, 'dist', 'bundle')).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    rmSync(cache(), { recursive: true });
  });
});
