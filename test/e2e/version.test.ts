import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../../', import.meta.url));
const manifest = JSON.parse(readFileSync(`${root}package.json`, 'utf8')) as { version: string; bin: Record<string, string> };

/** Runs an installed bin by its package.json entry, from a folder outside the package. */
function run(bin: string, args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [`${root}${manifest.bin[bin] ?? ''}`, ...args], { cwd: tmpdir(), encoding: 'utf8', input: '' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('--version', () => {
  it.each(Object.keys(manifest.bin).flatMap((bin) => [[bin, '--version'], [bin, '-V']]))('%s %s prints the package.json version and exits 0', (bin, flag) => {
    expect(run(bin, [flag])).toEqual({ code: 0, stdout: `${manifest.version}\n`, stderr: '' });
  });

  it.each([
    ['cqp', ['run', '--version']],
    ['cqp', ['replay', '--version']],
    ['cqp', ['log', 'cat', '-V']],
    ['cqp-filter', ['map', '--version']],
    ['cqp-source', ['demo', '--version']],
    ['cqp-sink', ['sqlite', '--version']],
  ])('on a command too: %s %s', (bin, args) => {
    // Required arguments and options (a pipeline, --db) are not asked for.
    expect(run(bin, args)).toEqual({ code: 0, stdout: `${manifest.version}\n`, stderr: '' });
  });
});
