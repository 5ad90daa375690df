import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import type { ComponentKind } from '../../src/core/component.js';
import { RUNTIME_OPTIONS } from '../../src/core/runtime-options.js';
import { parsePipeline } from '../../src/supervisor/config.js';
import { cqpAsync } from '../helpers/cli.js';

// A value for each runtime option, as a flag takes it and as a pipeline file writes it. A new option
// without a sample fails the first test: add one here.
const SAMPLES: Record<string, { cli: string[]; file?: unknown }> = {
  onError: { cli: ['skip'], file: 'skip' },
  deadLetter: { cli: ['bad.ndjson'], file: 'bad.ndjson' },
  maxLineBytes: { cli: ['1000'], file: 1000 },
  resume: { cli: ['{}'] },
  readLog: { cli: ['e.log'] },
  // With --follow the read ends at --until only.
  follow: { cli: ['--until', '3'] },
  from: { cli: ['2'] },
  until: { cli: ['2'] },
};

// One component of each kind, with what it needs besides runtime options.
const COMPONENT: Record<ComponentKind, string[]> = { source: ['demo', '--count', '3'], filter: ['where', 'true'], sink: ['stdout'] };

const cases = RUNTIME_OPTIONS.flatMap((spec) => spec.kinds.map((kind) => [spec.flag, kind, spec] as const));

describe('the runtime options, one table for the CLI and the pipeline file', () => {
  let dir: string;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'cqp-runtime-options-'));
    const log = await cqpAsync(['sink', 'log', '--path', 'e.log'], { cwd: dir, input: '{"a":1}\n{"a":2}\n{"a":3}\n' });
    expect(log.status, log.stderr).toBe(0);
  });

  it('has a sample value for every option', () => {
    expect(RUNTIME_OPTIONS.map((o) => o.key).filter((key) => SAMPLES[key] === undefined)).toEqual([]);
  });

  it.each(cases)('%s is a flag of cqp %s', async (_flag, kind, spec) => {
    const required = RUNTIME_OPTIONS.find((o) => o.key === spec.requires);
    const args = [...COMPONENT[kind], spec.flag, ...(SAMPLES[spec.key]?.cli ?? []), ...(required ? [required.flag, ...(SAMPLES[required.key]?.cli ?? [])] : [])];
    const r = await cqpAsync([kind, ...args], { cwd: dir, input: '{"a":1}\n' });
    expect(r.status, `cqp ${kind} ${args.join(' ')}: ${r.stderr}`).toBe(0);
  });

  it.each((['source', 'filter', 'sink'] as const).map((kind) => [kind]))('cqp %s NAME --help lists the options it takes, not the hidden ones', async (kind) => {
    const r = await cqpAsync([kind, ...(COMPONENT[kind].slice(0, 1)), '--help']);
    for (const spec of RUNTIME_OPTIONS) {
      const listed = r.stdout.includes(`${spec.flag} `) || r.stdout.includes(`${spec.flag}\n`);
      expect(listed, `${spec.flag} in cqp ${kind} --help`).toBe(spec.kinds.includes(kind) && spec.hidden !== true);
    }
  });

  it.each(cases)('%s of a %s is a pipeline file key when users set it', (_flag, kind, spec) => {
    const sample = SAMPLES[spec.key];
    const value = sample?.file ?? 'x';
    const set = `${spec.key}: ${JSON.stringify(value)}`;
    const text = `source: { type: demo, count: 3${kind === 'source' ? `, ${set}` : ''} }
stages:
  - { name: w, filter: where, with: { expr: "true" }${kind === 'filter' ? `, ${set}` : ''} }
sinks:
  - { name: out, type: stdout${kind === 'sink' ? `, ${set}` : ''} }
`;
    if (spec.file === undefined) {
      expect(() => parsePipeline(text, '/p/p.yaml')).toThrow(`unknown option "${spec.key}"`);
      return;
    }
    const plan = parsePipeline(text, '/p/p.yaml');
    const command = kind === 'source' ? plan.source.command : kind === 'filter' ? plan.stages[0]?.command : plan.sinks[0]?.command;
    const expected = spec.file === 'path' ? join('/p', String(value)) : String(value);
    expect(command?.args.slice(-2)).toEqual([spec.flag, expected]);
  });

  it.each(RUNTIME_OPTIONS.filter((o) => o.file !== undefined).map((o) => [o.key, o] as const))('%s is kept for a run: program, or refused when it does not apply to one', (key, spec) => {
    const text = `source: { type: demo }\nstages:\n  - { name: s, run: cat, ${key}: ${JSON.stringify(SAMPLES[key]?.file)} }\nsinks:\n  - { name: out, type: stdout }\n`;
    if (spec.programs) {
      const plan = parsePipeline(text, '/p/p.yaml');
      expect(plan.stages[0]?.runtime).toEqual({ [key]: spec.file === 'path' ? join('/p', String(SAMPLES[key]?.file)) : SAMPLES[key]?.file });
    } else {
      expect(() => parsePipeline(text, '/p/p.yaml')).toThrow(`${key} applies to built-in filters, not to run: programs`);
    }
  });
});
