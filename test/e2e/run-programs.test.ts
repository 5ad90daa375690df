import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { cqp } from '../helpers/cli.js';
import { eventually } from '../helpers/eventually.js';
import { runPipeline as run, tmpDir as tmp } from '../helpers/pipeline.js';
import { alive, childrenOf } from '../helpers/processes.js';

// `run:` programs under `cqp run`: exactly-once around them, and the blame for what they write.
const FIXTURES = fileURLToPath(new URL('../fixtures/run', import.meta.url));

function logLines(log: string): string[] {
  const r = cqp(['log', 'cat', log]);
  expect(r.status, r.stderr).toBe(0);
  return r.stdout === '' ? [] : r.stdout.trimEnd().split('\n');
}

/** What split.mjs makes of the first `count` demo events: `<eventId>#<part>`, in order. */
function expectedParts(count: number): string[] {
  const r = cqp(['source', 'demo', '--count', String(count)]);
  const out: string[] = [];
  for (const line of r.stdout.trimEnd().split('\n')) {
    const id = (JSON.parse(line) as { header: { eventId: string } }).header.eventId;
    const parts = 2 + (id.charCodeAt(id.length - 1) % 2);
    for (let k = 0; k < parts; k++) out.push(`${id}#${k}`);
  }
  return out;
}

function partsOf(lines: string[]): string[] {
  return lines.map((l) => {
    const e = JSON.parse(l) as { header: { eventId: string }; part: number; '@cqp'?: string };
    expect(e['@cqp']).toBeUndefined();
    return `${e.header.eventId}#${e.part}`;
  });
}

/** How many records the log holds (0 before it exists). */
function logged(log: string): number {
  return Number(/^records\s+(\d+)/m.exec(cqp(['log', 'stat', log]).stdout)?.[1] ?? 0);
}

describe('cqp run with run: programs', () => {
  it('gives each of several events made from one input its own position: all reach the log once', async () => {
    const dir = tmp();
    const file = join(dir, 'p.yaml');
    writeFileSync(
      file,
      `source: { type: demo, count: 1000 }
stages:
  - { name: split, run: ["${process.execPath}", "${join(FIXTURES, 'split.mjs')}"] }
sinks:
  - { name: log, type: log, path: events.log }
`,
    );
    const p = run(file);
    expect(await p.exit, p.stderr()).toBe(0);
    const expected = expectedParts(1000);
    expect(partsOf(logLines(join(dir, 'events.log')))).toEqual(expected);
    // A second run of the same finite pipeline finds everything applied: nothing is appended again.
    const again = run(file);
    expect(await again.exit, again.stderr()).toBe(0);
    expect(logLines(join(dir, 'events.log')).length).toBe(expected.length);
  }, 120_000);

  it('keeps them exactly once when the supervisor is killed -9 mid-stream and run again', async () => {
    const dir = tmp();
    const file = join(dir, 'p.yaml');
    const COUNT = 20_000;
    writeFileSync(
      file,
      `source: { type: demo, count: ${COUNT}, rate: 4000 }
stages:
  - { name: split, run: ["${process.execPath}", "${join(FIXTURES, 'split.mjs')}"] }
  - { name: mark, filter: map, with: { expr: "e.marked = true" } }
sinks:
  - { name: log, type: log, path: events.log }
`,
    );
    const log = join(dir, 'events.log');
    const first = run(file);
    await eventually(() => /cqp: running/.test(first.stderr()), { timeoutMs: 60_000, what: 'the pipeline to start' });
    const stagePids = childrenOf(first.child.pid as number);
    expect(stagePids.length).toBeGreaterThanOrEqual(3);
    await eventually(() => logged(log) > 3000, { timeoutMs: 60_000, what: 'more than 3000 events in the log' });
    first.child.kill('SIGKILL');
    await first.exit;
    // Its stages see their input end and exit on their own; the log's writer lock goes with the sink.
    await eventually(() => stagePids.every((pid) => !alive(pid)), { timeoutMs: 60_000, what: 'the stages of the killed supervisor to exit' });
    const partial = logLines(log).length;
    expect(partial).toBeLessThan(expectedParts(COUNT).length);
    const second = run(file);
    expect(await second.exit, second.stderr()).toBe(0);
    const lines = logLines(log);
    expect(lines.every((l) => (JSON.parse(l) as { marked?: boolean }).marked === true)).toBe(true);
    expect(partsOf(lines)).toEqual(expectedParts(COUNT));
  }, 180_000);

  it('keeps every event once when the program is taken out of the pipeline and the run goes on from what the sinks hold', () => {
    // With `run: cat`, each event reaches the sinks as `n.0`; without it, as `n`: the same input.
    const ids = (lines: string[]): string[] => lines.map((l) => (JSON.parse(l) as { header: { eventId: string } }).header.eventId);
    const demo = ids(cqp(['source', 'demo', '--count', '60']).stdout.trimEnd().split('\n'));
    // The log with views following it, and views fed by the stages themselves.
    for (const sinks of ['  - { name: log, type: log, path: events.log }\n  - { name: views, type: sqlite, db: views.db }\n', '  - { name: views, type: sqlite, db: views.db }\n']) {
      const dir = tmp();
      writeFileSync(join(dir, 'with.yaml'), `source: { type: demo, count: 50 }\nstages:\n  - { name: c, run: cat }\nsinks:\n${sinks}`);
      writeFileSync(join(dir, 'without.yaml'), `source: { type: demo, count: 60 }\nsinks:\n${sinks}`);
      for (const file of ['with.yaml', 'without.yaml']) {
        const r = cqp(['run', join(dir, file)]);
        expect(r.status, r.stderr).toBe(0);
      }
      if (sinks.includes('events.log')) expect(ids(logLines(join(dir, 'events.log')))).toEqual(demo);
      const views = cqp(['query', join(dir, 'views.db'), 'SELECT event_id FROM events ORDER BY seq', '--json']);
      expect(views.status, views.stderr).toBe(0);
      expect(views.stdout.trimEnd().split('\n').map((l) => (JSON.parse(l) as { event_id: string }).event_id)).toEqual(demo);
    }
  });

  it('replays a log through such a program into a new log: every event once', () => {
    const dir = tmp();
    const source = join(dir, 'source.log');
    const sink = cqp(['sink', 'log', '--path', source], { input: cqp(['source', 'demo', '--count', '300']).stdout });
    expect(sink.status, sink.stderr).toBe(0);
    const file = join(dir, 'v2.yaml');
    writeFileSync(
      file,
      `source: { type: stdin }
stages:
  - { name: split, run: ["${process.execPath}", "${join(FIXTURES, 'split.mjs')}"] }
sinks:
  - { name: log, type: log, path: replayed.log }
`,
    );
    const r = cqp(['replay', '--log', source, '--pipeline', file]);
    expect(r.status, r.stderr).toBe(0);
    expect(partsOf(logLines(join(dir, 'replayed.log')))).toEqual(expectedParts(300));
  }, 60_000);

  it('refuses a program that drops "@cqp": it names the stage, the line and the fix, exit 1', async () => {
    const dir = tmp();
    const file = join(dir, 'p.yaml');
    writeFileSync(
      file,
      `source: { type: demo, count: 50 }
stages:
  - { name: strip, run: ["${process.execPath}", "${join(FIXTURES, 'drop-stamp.mjs')}"] }
sinks:
  - { name: log, type: log, path: events.log }
`,
    );
    const p = run(file);
    expect(await p.exit).toBe(1);
    expect(p.stderr()).toMatch(/stage strip \(run: .*drop-stamp\.mjs\) wrote line 1 without its "@cqp" key/);
    expect(p.stderr()).toMatch(/keep the "@cqp" key/);
    expect(p.stderr()).not.toMatch(/restarting it/);
  }, 60_000);

  it('lets a program drop "@cqp" when no exactly-once sink is fed (a file sink is at-least-once anyway)', async () => {
    const dir = tmp();
    const file = join(dir, 'p.yaml');
    writeFileSync(
      file,
      `source: { type: demo, count: 50 }
stages:
  - { name: strip, run: ["${process.execPath}", "${join(FIXTURES, 'drop-stamp.mjs')}"] }
sinks:
  - { name: out, type: file, path: out.ndjson }
`,
    );
    const p = run(file);
    expect(await p.exit, p.stderr()).toBe(0);
    expect(readFileSync(join(dir, 'out.ndjson'), 'utf8').trim().split('\n')).toHaveLength(50);
  }, 60_000);

  it('names a program that writes a line that is not a JSON object as the culprit, exit 1', async () => {
    const dir = tmp();
    const file = join(dir, 'p.yaml');
    writeFileSync(
      file,
      `source: { type: demo, count: 50 }
stages:
  - { name: chatty, run: ["${process.execPath}", "${join(FIXTURES, 'garbage.mjs')}"] }
sinks:
  - { name: log, type: log, path: events.log }
`,
    );
    const p = run(file);
    expect(await p.exit).toBe(1);
    expect(p.stderr()).toMatch(/stage chatty \(run: .*garbage\.mjs\) wrote a line that is not a JSON object: line 4: processing \{item 3\}/);
    expect(p.stderr()).not.toMatch(/\[log\]/);
    // The events before the bad line are kept.
    expect(logLines(join(dir, 'events.log')).length).toBe(3);
  }, 60_000);

  it('skips or dead-letters such a line when the stage says onError', async () => {
    const dir = tmp();
    for (const policy of ['skip', 'dead-letter']) {
      const file = join(dir, `${policy}.yaml`);
      writeFileSync(
        file,
        `source: { type: demo, count: 50 }
stages:
  - { name: chatty, onError: ${policy}, deadLetter: ${policy}.bad, run: ["${process.execPath}", "${join(FIXTURES, 'garbage.mjs')}"] }
sinks:
  - { name: log, type: log, path: ${policy}.log }
`.replace(', deadLetter: skip.bad', ''),
      );
      const p = run(file);
      expect(await p.exit, p.stderr()).toBe(0);
      expect(logLines(join(dir, `${policy}.log`)).length).toBe(50);
      if (policy === 'skip') expect(p.stderr()).toMatch(/skipped .*chatty.*:4: .*not a JSON object/);
      else {
        const record = JSON.parse(readFileSync(join(dir, 'dead-letter.bad'), 'utf8')) as { line: number; raw: string };
        expect(record.line).toBe(4);
        expect(record.raw).toBe('processing {item 3}');
      }
    }
  }, 60_000);
});
