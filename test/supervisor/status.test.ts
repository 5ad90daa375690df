import { closeSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { parsePipeline } from '../../src/supervisor/config.js';
import { parseHostPort } from '../../src/supervisor/metrics.js';
import type { ReplayPlan } from '../../src/supervisor/replay.js';
import { describeReplay } from '../../src/supervisor/replay-report.js';
import { consistentCounts, formatCount, Rates, renderTable, statusLine, statusMode, summary, upstreams } from '../../src/supervisor/status.js';
import type { ComponentStats } from '../../src/supervisor/supervisor.js';

const PIPELINES = fileURLToPath(new URL('../../pipelines/', import.meta.url));

function stats(name: string, kind: ComponentStats['kind'], inN: number, out: number): ComponentStats {
  return { name, kind, pid: 1, generation: 1, in: inN, out, errors: 0, mirrored: 0, restarts: 0, heardAt: undefined };
}

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('upstreams: what bounds each component', () => {
  it('stages and stage-fed sinks read the one before; views following the log read the log sink', () => {
    const plan = parsePipeline(
      `source: { type: demo, count: 10 }
stages:
  - { name: a, filter: enrich }
  - { name: b, filter: enrich }
sinks:
  - { name: views, type: sqlite, db: data/v.db, views: views/ice-creams.yaml }
  - { name: log, type: log, path: data/e.log }
  - { name: out, type: stdout }
`,
      join(PIPELINES, 'status-test.yaml'),
    );
    expect(Object.fromEntries(upstreams(plan))).toEqual({ a: 'source', b: 'a', views: 'log', log: 'b', out: 'b' });
  });
});

describe('consistentCounts: no row ahead of what it reads', () => {
  const up = new Map([
    ['a', 'src'],
    ['b', 'a'],
    ['log', 'b'],
    ['views', 'log'],
  ]);
  const cases: Array<{ what: string; given: Array<[string, ComponentStats['kind'], number, number]>; shown: Array<[number, number]> }> = [
    {
      what: 'consistent counts are left as they are',
      given: [['src', 'source', 0, 100], ['a', 'stage', 90, 90], ['b', 'stage', 80, 80], ['log', 'sink', 70, 0], ['views', 'sink', 60, 0]],
      shown: [[0, 100], [90, 90], [80, 80], [70, 0], [60, 0]],
    },
    {
      what: 'a stage sampled after its upstream shows no more in than the upstream put out',
      given: [['src', 'source', 0, 100], ['a', 'stage', 120, 120], ['b', 'stage', 80, 80], ['log', 'sink', 70, 0], ['views', 'sink', 60, 0]],
      shown: [[0, 100], [100, 120], [80, 80], [70, 0], [60, 0]],
    },
    {
      what: 'a filter that fans out keeps its out; only in is bounded',
      given: [['src', 'source', 0, 10], ['a', 'stage', 10, 30], ['b', 'stage', 25, 25], ['log', 'sink', 25, 0], ['views', 'sink', 25, 0]],
      shown: [[0, 10], [10, 30], [25, 25], [25, 0], [25, 0]],
    },
    {
      what: 'a view never shows more than the log sink appended',
      given: [['src', 'source', 0, 100], ['a', 'stage', 100, 100], ['b', 'stage', 100, 100], ['log', 'sink', 50, 0], ['views', 'sink', 80, 0]],
      shown: [[0, 100], [100, 100], [100, 100], [50, 0], [50, 0]],
    },
    {
      what: 'a bound carries down the chain',
      given: [['src', 'source', 0, 5], ['a', 'stage', 50, 50], ['b', 'stage', 50, 50], ['log', 'sink', 50, 0], ['views', 'sink', 50, 0]],
      shown: [[0, 5], [5, 50], [50, 50], [50, 0], [50, 0]],
    },
  ];
  it.each(cases)('$what', ({ given, shown }) => {
    const rows = consistentCounts(given.map(([n, k, i, o]) => stats(n, k, i, o)), up);
    expect(rows.map((r) => [r.in, r.out])).toEqual(shown);
  });

  it('the views listed before the log sink are bounded too', () => {
    const rows = consistentCounts([stats('src', 'source', 0, 9), stats('views', 'sink', 9, 0), stats('log', 'sink', 4, 0)], new Map([['views', 'log'], ['log', 'src']]));
    expect(rows.map((r) => r.in)).toEqual([0, 4, 4]);
  });
});

describe('status lines', () => {
  it('the first line, before any rate is measured, shows counts without a rate', () => {
    const rates = new Rates();
    const rows = [stats('src', 'source', 0, 1500), stats('log', 'sink', 1500, 0)];
    rates.sample(rows, 1000);
    const first = statusLine(rows, rates, { ok: 0, failed: 0 });
    expect(first).not.toMatch(/\/s\)/);
    expect(first).toContain('src out=1,500 |');
    rates.sample([stats('src', 'source', 0, 3500), stats('log', 'sink', 3500, 0)], 3000);
    expect(statusLine(rows, rates, { ok: 0, failed: 0 })).toContain('(1,000/s)');
  });

  it("a sink's activity (a view rebuilt beside the live one) shows beside its counts, in the line and the table", () => {
    const views = { ...stats('views', 'sink', 1500, 0), heardAt: Date.now(), activity: 'rebuilding ice_creams: 40% of 300000 events, about 4 s left' };
    const rates = new Rates();
    expect(statusLine([views], rates, { ok: 0, failed: 0 })).toBe('cqp: views in=1,500 (rebuilding ice_creams: 40% of 300000 events, about 4 s left) | reloads 0 ok 0 failed');
    expect(renderTable([views], rates, { ok: 0, failed: 0 }).split('\n')[1]).toMatch(/^views .* rebuilding ice_creams: 40% of 300000 events, about 4 s left$/);
    expect(statusLine([{ ...views, activity: undefined }], rates, { ok: 0, failed: 0 })).toBe('cqp: views in=1,500 | reloads 0 ok 0 failed');
  });
});

describe('one number format in run and replay summaries', () => {
  it('both write thousands with separators', () => {
    const run = summary([stats('src', 'source', 0, 30000), stats('a', 'stage', 30000, 29000), stats('log', 'sink', 29000, 0)], 3000);
    expect(run).toContain('cqp: 30,000 events in 3.0 s (10,000/s)');
    expect(run).toContain('  a: 30,000 in, 29,000 out');
    expect(run).toContain('  log: 29,000 in');
    const plan = { log: 'e.log', pipeline: { name: 'p' }, range: { count: 30000, first: { seq: 1, time: 0 }, last: { seq: 30000, time: 0 } }, run: { stages: [] }, sinks: [] };
    expect(describeReplay(plan as unknown as ReplayPlan)).toContain(`read: ${formatCount(30000)} events`);
    expect(formatCount(30000)).toBe('30,000');
  });

  it('says "1 event", not "1 events"', () => {
    expect(summary([stats('src', 'source', 0, 1), stats('log', 'sink', 1, 0)], 1000)).toContain('cqp: 1 event in 1.0 s (1/s)');
  });
});

describe('statusMode: where the progress goes, from the real descriptors', () => {
  it('no table and no lines when stdout and stderr are the same file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cqp-status-'));
    dirs.push(dir);
    const a = openSync(join(dir, 'out'), 'w');
    const b = openSync(join(dir, 'out'), 'a');
    const c = openSync(join(dir, 'err'), 'w');
    try {
      expect(statusMode(a, b)).toBe('none');
      expect(statusMode(a, c)).toBe('lines');
    } finally {
      [a, b, c].forEach((fd) => closeSync(fd));
    }
  });
});

describe('--metrics address', () => {
  it.each([
    ['9464', { host: '127.0.0.1', port: 9464 }],
    [':9464', { host: '127.0.0.1', port: 9464 }],
    ['0.0.0.0:80', { host: '0.0.0.0', port: 80 }],
    ['[::1]:0', { host: '::1', port: 0 }],
  ])('%s', (text, want) => {
    expect(parseHostPort(text)).toEqual(want);
  });
  it.each(['', 'host', '70000', 'a:b'])('rejects "%s"', (text) => {
    expect(() => parseHostPort(text)).toThrow(/--metrics: expected HOST:PORT/);
  });
});
