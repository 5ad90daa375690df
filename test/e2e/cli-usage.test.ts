import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import fileSink from '../../src/sinks/file.js';
import logSink from '../../src/sinks/log.js';
import { optionSpecs } from '../../src/core/options.js';
import { cqpAsync } from '../helpers/cli.js';
import { runPipeline } from '../helpers/pipeline.js';

const dirs: string[] = [];
function tmp(): string {
  const dir = mkdtempSync(join(tmpdir(), 'cqp-usage-'));
  dirs.push(dir);
  return dir;
}
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('the command line a user meets first', () => {
  it('bare `cqp` prints the usage to stderr and exits 2', async () => {
    const r = await cqpAsync([]);
    expect(r.status).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^Usage: cqp /);
  });

  it('`cqp --help` prints the usage to stdout and exits 0', async () => {
    const r = await cqpAsync(['--help']);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^Usage: cqp /);
    expect(r.stderr).toBe('');
  });

  it('a missing required option says `--path is required`', async () => {
    const r = await cqpAsync(['sink', 'file']);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/--path is required/);
    expect(r.stderr).not.toMatch(/Invalid input|received undefined/);
  });

  it('validate names what is missing with one space, at the top level too', async () => {
    const r = await cqpAsync(['validate'], { bin: 'filter', input: '{"a":1}\n' });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("invalid: must have required property 'header'; must have required property 'payload'");
    expect(r.stderr).not.toMatch(/ {2}must/);
  });
});

describe('--fsync is spelled the same on the file and log sinks', () => {
  it('both take always|batch|never', () => {
    const spec = (def: typeof fileSink): unknown => {
      const s = optionSpecs(def.options).find((o) => o.key === 'fsync');
      return s && { type: s.type, choices: s.choices };
    };
    expect(spec(fileSink)).toEqual({ type: 'enum', choices: ['always', 'batch', 'never'] });
    expect(spec(logSink as unknown as typeof fileSink)).toEqual(spec(fileSink));
  });

  it('the file sink takes --fsync batch on the command line', async () => {
    const dir = tmp();
    const r = await cqpAsync(['file', '--path', join(dir, 'out.ndjson'), '--fsync', 'batch'], { bin: 'sink', input: '{"a":1}\n' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });
});

describe('cqp run --metrics', () => {
  it('accepts a bare port and binds 127.0.0.1', async () => {
    const dir = tmp();
    const file = join(dir, 'p.yaml');
    writeFileSync(file, 'source: { type: demo, count: 10 }\nsinks:\n  - { name: out, type: file, path: out.ndjson }\n');
    const p = runPipeline(file, { args: ['--metrics', '0'] });
    expect(await p.exitWithin(60_000)).toBe(0);
    expect(p.stderr()).toMatch(/metrics on http:\/\/127\.0\.0\.1:\d+\/metrics/);
  });
});
