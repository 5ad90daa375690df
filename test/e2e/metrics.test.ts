import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { eventually } from '../helpers/eventually.js';
import { runPipeline } from '../helpers/pipeline.js';

/**
 * A strict reader of the Prometheus text format (0.0.4): the problems it finds, one line each. Every
 * sample belongs to a family declared by `# HELP` and `# TYPE` before it; counters end in `_total`,
 * nothing else does; names, labels and values are well formed; no series appears twice.
 */
export function metricsProblems(text: string): string[] {
  const problems: string[] = [];
  const name = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
  const types = new Map<string, string>();
  const helps = new Set<string>();
  const series = new Set<string>();
  if (!text.endsWith('\n')) problems.push('the text does not end with a newline');
  text.split('\n').forEach((line, i) => {
    const at = `line ${i + 1}`;
    if (line === '') return;
    const meta = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
    if (meta) {
      const [, kind, family = '', rest = ''] = meta;
      if (!name.test(family)) problems.push(`${at}: bad metric name ${family}`);
      if (kind === 'HELP') {
        if (rest.trim() === '') problems.push(`${at}: ${family} has an empty HELP`);
        helps.add(family);
      } else {
        if (types.has(family)) problems.push(`${at}: ${family} declared twice`);
        if (!['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(rest)) problems.push(`${at}: ${family} has type "${rest}"`);
        if (rest === 'counter' && !family.endsWith('_total')) problems.push(`${at}: counter ${family} does not end in _total`);
        if (rest !== 'counter' && family.endsWith('_total')) problems.push(`${at}: ${rest} ${family} ends in _total (only counters do)`);
        types.set(family, rest);
      }
      return;
    }
    if (line.startsWith('#')) return;
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)( -?\d+)?$/.exec(line);
    if (!sample) {
      problems.push(`${at}: not a sample: ${line}`);
      return;
    }
    const [, metric = '', , labels = '', value = ''] = sample;
    const type = types.get(metric);
    if (type === undefined) problems.push(`${at}: ${metric} has no # TYPE before its samples`);
    if (!helps.has(metric)) problems.push(`${at}: ${metric} has no # HELP`);
    if (labels !== '' && !/^[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*")*,?$/.test(labels)) {
      problems.push(`${at}: bad labels {${labels}}`);
    }
    const number = Number(value);
    if (!/^(?:[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)|[-+]?Inf|NaN)$/.test(value)) problems.push(`${at}: bad value ${value}`);
    if (type === 'counter' && !(number >= 0)) problems.push(`${at}: counter ${metric} is ${value}`);
    const key = `${metric}{${labels}}`;
    if (series.has(key)) problems.push(`${at}: ${key} appears twice`);
    series.add(key);
  });
  return problems;
}

const promtool = spawnSync('promtool', ['--version'], { encoding: 'utf8' }).status === 0;

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('/metrics', () => {
  let text = '';

  it('is served while the pipeline runs, with counts that moved', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cqp-metrics-'));
    dirs.push(dir);
    const file = join(dir, 'p.yaml');
    writeFileSync(
      file,
      `source: { type: demo, count: 0, rate: 500 }
stages:
  - { name: enrich, filter: enrich }
sinks:
  - { name: log, type: log, path: out/events.log }
`,
    );
    const p = runPipeline(file, { metrics: true });
    const address = (await p.waitFor(/metrics on http:\/\/([\d.:]+)\//))[1] as string;
    text = await eventually(
      async () => {
        const body = await (await fetch(`http://${address}/metrics`)).text();
        return /^cqp_stage_events_in_total\{stage="log"\} [1-9]/m.test(body) ? body : undefined;
      },
      { timeoutMs: 60_000, what: 'events counted into the log sink on /metrics' },
    );
    p.child.kill('SIGTERM');
    expect(await p.exitWithin(60_000)).toBe(0);
  });

  it('passes a strict reading of the Prometheus text format: counters are counters', () => {
    expect(text).not.toBe('');
    expect(metricsProblems(text)).toEqual([]);
    expect(text).toMatch(/^# TYPE cqp_stage_events_out_total counter$/m);
    expect(text).toMatch(/^# TYPE cqp_reloads_total counter$/m);
    expect(text).toMatch(/^# TYPE cqp_stage_generation gauge$/m);
  });

  it.skipIf(!promtool)('passes `promtool check metrics` (skipped: promtool is not installed; Debian ships it in the prometheus package)', () => {
    expect(text).not.toBe('');
    const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    expect(`${r.stdout}${r.stderr}`).toBe('');
    expect(r.status).toBe(0);
  });
});

describe('the strict reader finds what promtool rejects', () => {
  it.each([
    ['# HELP x_total n\n# TYPE x_total gauge\nx_total 1\n', /gauge x_total ends in _total/],
    ['# HELP x n\n# TYPE x counter\nx 1\n', /counter x does not end in _total/],
    ['x_total 1\n', /no # TYPE/],
    ['# HELP x n\n# TYPE x gauge\nx{a="1"} 1\nx{a="1"} 2\n', /appears twice/],
    ['# HELP x n\n# TYPE x gauge\nx one\n', /bad value/],
  ])('%j', (bad, problem) => {
    expect(metricsProblems(bad).join('\n')).toMatch(problem);
  });
});
