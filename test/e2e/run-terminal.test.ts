import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BIN } from '../helpers/cli.js';

// `script` runs a command on a real pseudo-terminal, as a user's shell would.
const hasScript = spawnSync('script', ['--version'], { encoding: 'utf8' }).status === 0;

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const quote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

/** Runs `cqp run p.yaml REDIRECT` on a terminal and returns what the terminal showed. */
function onTerminal(dir: string, redirect = ''): { code: number | null; screen: string } {
  const command = `${quote(process.execPath)} ${quote(BIN.cqp)} run p.yaml ${redirect}`;
  const r = spawnSync('script', ['-qefc', command, '/dev/null'], { cwd: dir, encoding: 'utf8', timeout: 120_000, stdio: ['ignore', 'pipe', 'pipe'] });
  return { code: r.status, screen: r.stdout.replace(/\r\n/g, '\n') };
}

// Long enough (about 3 s) for the live table to be drawn a few times.
const PIPELINE = 'source: { type: demo, count: 1500, rate: 500 }\nsinks:\n  - { name: out, type: stdout }\n';

describe.skipIf(!hasScript)('cqp run on a terminal (skipped: the `script` command is not installed)', () => {
  it('draws no table over the events a stdout sink writes to the same terminal', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cqp-tty-'));
    dirs.push(dir);
    writeFileSync(join(dir, 'p.yaml'), PIPELINE);
    const { code, screen } = onTerminal(dir);
    expect(code).toBe(0);
    expect(screen).not.toContain('\x1b[');
    expect(screen).not.toMatch(/^stage\s+pid/m);
    const data = screen.split('\n').filter((l) => l.startsWith('{'));
    expect(data.map((l) => (JSON.parse(l) as { header: { eventId: string } }).header.eventId)).toHaveLength(1500);
  });

  it('draws the live table on the terminal when the events go to a file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cqp-tty-'));
    dirs.push(dir);
    writeFileSync(join(dir, 'p.yaml'), PIPELINE);
    const { code, screen } = onTerminal(dir, '> out.ndjson');
    expect(code).toBe(0);
    expect(screen).toMatch(/stage\s+pid\s+gen/);
    const lines = readFileSync(join(dir, 'out.ndjson'), 'utf8').trim().split('\n');
    expect(lines.map((l) => JSON.parse(l) as unknown)).toHaveLength(1500);
  });
});
