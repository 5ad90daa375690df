import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { cqpAsync } from '../helpers/cli.js';
import { eventually } from '../helpers/eventually.js';
import { runPipeline, type RunningPipeline, type StageStatus } from '../helpers/pipeline.js';

const started: RunningPipeline[] = [];
afterEach(async () => {
  for (const p of started.splice(0)) {
    if (p.exited() !== undefined) continue;
    p.child.kill('SIGTERM');
    await p.exitWithin(30_000);
  }
});

/**
 * A map stage that appends its name and version to `e.path` and numbers the events it sees in `e.<name>n`
 * (a counter in the process: it starts again at 1 in a new process).
 */
function stage(name: string, version = 1): string {
  const expr = `e.path = (e.path || '') + '${name}${version}', e.${name}n = (globalThis.n = (globalThis.n || 0) + 1)`;
  return `  - { name: ${name}, filter: map, with: { expr: "${expr}" } }`;
}

interface Logged {
  header: { eventId: string };
  path: string;
  [counter: string]: unknown;
}

interface Setup {
  /** Files to write into the pipeline's directory first (name → text). */
  files?: Record<string, string>;
  /** Called once events flow, just before `second` is saved. */
  beforeSave?: (dir: string) => Promise<void>;
  /** Events per second, and how many to see reach the log before and after the reload. */
  rate?: number;
  flow?: number;
  /** Sinks besides the log the test reads. */
  moreSinks?: string[];
}

/** Starts a flowing pipeline with `first`, saves `second` once events flow, and stops after more have flowed. */
async function reloadWhileFlowing(first: string[], second: string[], setup: Setup = {}): Promise<{ before: StageStatus[]; after: StageStatus[]; events: Logged[] }> {
  const dir = mkdtempSync(join(tmpdir(), 'cqp-rewire-'));
  for (const [name, text] of Object.entries(setup.files ?? {})) writeFileSync(join(dir, name), text);
  const file = join(dir, 'p.yaml');
  const write = (stages: string[]): void =>
    writeFileSync(file, `source: { type: demo, count: 0, rate: ${setup.rate ?? 20_000} }\nstages:\n${stages.join('\n')}\nsinks:\n${['  - { name: log, type: log, path: events.log }', ...(setup.moreSinks ?? [])].join('\n')}\n`);
  write(first);
  const p = runPipeline(file, { metrics: true });
  started.push(p);
  const logged = async (): Promise<number> => (await p.stages()).find((s) => s.name === 'log')?.in ?? 0;
  // By default more events than the pipes between the stages hold, before and after the reload.
  const flow = async (): Promise<void> => {
    const from = await logged();
    await eventually(async () => (await logged()) > from + (setup.flow ?? 8000), { timeoutMs: 60_000, what: 'events to reach the log' });
  };
  await flow();
  const before = await p.stages();
  await setup.beforeSave?.(dir);
  write(second);
  await p.waitFor(/reload #1: /);
  await flow();
  const after = await p.stages();
  p.child.kill('SIGTERM');
  expect(await p.exitWithin(60_000), p.stderr()).toBe(0);
  const cat = await cqpAsync(['log', 'cat', join(dir, 'events.log')]);
  expect(cat.status, cat.stderr).toBe(0);
  const events = cat.stdout.trim().split('\n').map((l) => JSON.parse(l) as Logged);
  const ids = await cqpAsync(['source', 'demo', '--count', String(events.length)]);
  // Every event once, in order: the log holds exactly the demo source's first N events.
  expect(events.map((e) => e.header.eventId)).toEqual(ids.stdout.trim().split('\n').map((l) => (JSON.parse(l) as Logged).header.eventId));
  return { before, after, events };
}

function of(stages: StageStatus[], name: string): StageStatus | undefined {
  return stages.find((s) => s.name === name);
}

/** The distinct values of `e.path` in log order: each a contiguous run of events. */
function phases(events: Logged[]): string[] {
  const out: string[] = [];
  for (const e of events) if (out.at(-1) !== e.path) out.push(e.path);
  return out;
}

describe('cqp run: a reload replaces only the changed stages', () => {
  it('[a, b, c] -> [a\', b, c\']: b keeps its process and its state; a and c switch together', async () => {
    const { before, after, events } = await reloadWhileFlowing([stage('a'), stage('b'), stage('c')], [stage('a', 2), stage('b'), stage('c', 2)]);
    expect(of(after, 'b')?.pid).toBe(of(before, 'b')?.pid);
    expect(of(after, 'b')?.generation).toBe(1);
    for (const name of ['a', 'c']) expect(of(after, name)?.generation, name).toBe(2);
    // No event saw a new a with an old c, or the reverse.
    expect(phases(events)).toEqual(['a1b1c1', 'a2b1c2']);
    // One b process saw every event, once each and in order: its counter never started again.
    expect(events.every((e, i) => e.bn === i + 1)).toBe(true);
  }, 120_000);

  it('[a, b, c] -> [a, c, b]: a pure reorder starts nothing; every event passes each stage once', async () => {
    const { before, after, events } = await reloadWhileFlowing([stage('a'), stage('b'), stage('c')], [stage('a'), stage('c'), stage('b')]);
    for (const name of ['a', 'b', 'c']) {
      expect(of(after, name)?.pid, name).toBe(of(before, name)?.pid);
      expect(of(after, name)?.generation, name).toBe(1);
    }
    expect(phases(events)).toEqual(['a1b1c1', 'a1c1b1']);
    for (const name of ['an', 'bn', 'cn']) expect(events.every((e, i) => e[name] === i + 1), name).toBe(true);
  }, 120_000);

  it('[a, b] -> [a\', b] with two sinks: b, whose output the supervisor pumps to both, keeps its process', async () => {
    const { before, after, events } = await reloadWhileFlowing([stage('a'), stage('b')], [stage('a', 2), stage('b')], {
      moreSinks: ['  - { name: copy, type: log, path: copy.log }'],
    });
    expect(of(after, 'b')?.pid).toBe(of(before, 'b')?.pid);
    expect(of(after, 'a')?.generation).toBe(2);
    expect(phases(events)).toEqual(['a1b1', 'a2b1']);
    expect(events.every((e, i) => e.bn === i + 1)).toBe(true);
  }, 120_000);

  it('a kept stage that holds an event for seconds while the reload waits for it: no event crosses from the old chain to the new', async () => {
    // b, an async module, holds one event for 5 s once the file `hold` appears: it reads and writes
    // nothing meanwhile, as a stage that is done would, while that event and those after it are still
    // to pass the old c. Events flow slowly enough for what a sends meanwhile to fit in b's input pipe:
    // the old a then ends and the reload reaches b while b still holds its event.
    const b = [
      "import { existsSync, unlinkSync, writeFileSync } from 'node:fs';",
      "import { setTimeout as sleep } from 'node:timers/promises';",
      'let n = 0;',
      'export default async (e) => {',
      "  e.path = (e.path || '') + 'b1';",
      '  e.bn = ++n;',
      "  if (existsSync('hold')) { unlinkSync('hold'); writeFileSync('held', String(n)); await sleep(5000); }",
      '  return e;',
      '};',
    ].join('\n');
    const slowB = '  - { name: b, filter: module, with: { file: b.mjs } }';
    const { before, after, events } = await reloadWhileFlowing([stage('a'), slowB, stage('c')], [stage('a', 2), slowB, stage('c', 2)], {
      files: { 'b.mjs': b },
      rate: 10,
      flow: 20,
      beforeSave: async (dir) => {
        writeFileSync(join(dir, 'hold'), '');
        await eventually(() => existsSync(join(dir, 'held')), { timeoutMs: 30_000, what: 'b to hold an event' });
      },
    });
    expect(of(after, 'b')?.pid).toBe(of(before, 'b')?.pid);
    // Every event before some point saw a1 b1 c1, every one after a2 b1 c2: the held event and the
    // ones queued behind it included.
    expect(phases(events)).toEqual(['a1b1c1', 'a2b1c2']);
    expect(events.every((e, i) => e.bn === i + 1)).toBe(true);
  }, 120_000);

  // The new a, once loaded and before it reports ready, kills `victim` with SIGKILL (or, for a changed
  // b, has it crash on its next event; once) and waits until it is gone, so it has died before the
  // reload reaches it. A kept b that died must end its new
  // downstream, the new c, or the crash recovery waits for c for ever; an old c that died closes the
  // output of the kept b, which then exits 0 while the reload rewires it, and the chain must be
  // recovered from b although the process that crashed (the old c) is no longer in it.
  // A changed b that died: the events it held are gone, so the reload must not let any event past
  // them (the log would then skip them when the pipeline resumes from its positions).
  it.each([
    ['a kept stage (b)', 'b', 1],
    ['the replaced stage after a kept one (the old c)', 'c', 1],
    ['a replaced stage (b), on an event it held,', 'b', 2],
  ])('%s died while the reload started its neighbours: the pipeline recovers and goes on', async (_, victim, bNext) => {
    // The old b, told to by the file `crash`, exits 1 on the event in hand; the others are killed.
    const crashes = "if (existsSync('crash')) process.exit(1); ";
    const counted = (name: string, version = 1, first = ''): string =>
      [
        "import { existsSync, writeFileSync } from 'node:fs';",
        `writeFileSync('${name}${version}.pid', String(process.pid));`,
        `export default (e) => { ${first}e.path = (e.path || '') + '${name}${version}'; return e; };`,
      ].join('\n');
    const a2 = [
      "import { existsSync, readFileSync, writeFileSync } from 'node:fs';",
      "import { setTimeout as sleep } from 'node:timers/promises';",
      "if (!existsSync('killed')) {",
      "  writeFileSync('killed', '');",
      `  const pid = Number(readFileSync('${victim}1.pid', 'utf8'));`,
      bNext === 2 ? "  writeFileSync('crash', '');" : "  process.kill(pid, 'SIGKILL');",
      // Gone, or a zombie left for the supervisor to reap: either way it has died.
      "  const state = () => { try { return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1][0]; } catch { return 'gone'; } };",
      "  while (state() !== 'gone' && state() !== 'Z') await sleep(10);",
      '}',
      "export default (e) => { e.path = (e.path || '') + 'a2'; return e; };",
    ].join('\n');
    const moduleStage = (name: string, file: string): string => `  - { name: ${name}, filter: module, with: { file: ${file} } }`;
    const { before, after, events } = await reloadWhileFlowing(
      [stage('a'), moduleStage('b', 'b1.mjs'), moduleStage('c', 'c.mjs')],
      [moduleStage('a', 'a2.mjs'), moduleStage('b', `b${bNext}.mjs`), stage('c', 2)],
      { files: { 'b1.mjs': counted('b', 1, bNext === 2 ? crashes : ''), 'b2.mjs': counted('b', 2), 'c.mjs': counted('c'), 'a2.mjs': a2 } },
    );
    // b, dead, replaced or left without an output, was restarted with the rest of the chain.
    expect(of(after, 'b')?.pid).not.toBe(of(before, 'b')?.pid);
    // Each event passed one version of the whole pipeline: a1 b1 c1, or a2 b1 c2 after the reload.
    expect(new Set(events.map((e) => e.path))).toEqual(new Set(['a1b1c1', `a2b${bNext}c2`]));
    expect(phases(events).at(-1)).toBe(`a2b${bNext}c2`);
  }, 120_000);
});
