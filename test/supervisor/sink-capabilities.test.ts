import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as z from 'zod';
import { defineSink, type ComponentDefinition, type SinkDefinition } from '../../src/core/component.js';
import { CqpError } from '../../src/core/errors.js';
import type { PositionMap } from '../../src/core/position.js';
import { registry } from '../../src/core/registry.js';
import { openLogWriter } from '../../src/log/writer.js';
import { commitTemp, completeTemp, type BlueGreenFile } from '../../src/supervisor/blue-green.js';
import { loadPipeline } from '../../src/supervisor/config.js';
import { reloadDiff } from '../../src/supervisor/diff.js';
import { contentKey, filesRead, readComponentFiles } from '../../src/supervisor/read-files.js';
import { resumePositions } from '../../src/supervisor/positions.js';
import { planReplay } from '../../src/supervisor/replay.js';
import { sinkToRunHere } from '../../src/supervisor/replay-here.js';
import { sinkEnds } from '../../src/supervisor/sink-ends.js';

/*
 * Test-only sinks, registered for these tests alone: the shared code must honour what each declares
 * without knowing its name (the way a new sink joins cqp by its own file).
 */

/** What each test store holds, by its resolved path: the positions a fake store reads back. */
const held = new Map<string, PositionMap>();
const notStarted = (): never => {
  throw new Error('these tests never start a sink');
};

const journal = defineSink({
  name: 'test-journal',
  summary: 'test only: keeps a command log',
  options: z.object({ file: z.string() }),
  examples: [],
  store: { option: 'file', locked: true, commandLog: true, positions: async ({ file }) => held.get(file) ?? {} },
  create: notStarted,
});

const mirror = defineSink({
  name: 'test-mirror',
  summary: 'test only: keeps a store of its own, follows logs, rebuilt blue/green',
  options: z.object({ into: z.string().meta({ path: true }) }),
  examples: [],
  store: { option: 'into', positions: async ({ into }) => held.get(into) ?? {}, rebuild: { companions: ['.side'] } },
  followsLog: true,
  create: notStarted,
});

const bare = defineSink({
  name: 'test-bare',
  summary: 'test only: declares nothing',
  options: z.object({ path: z.string() }),
  examples: [],
  create: notStarted,
});

const inside = defineSink({
  name: 'test-inside',
  summary: 'test only: may run inside the process that would start it',
  options: z.object({ path: z.string() }),
  examples: [],
  inProcess: true,
  create: notStarted,
});

/** A recipe file lists, one a line, more files the sink reads (relative to the recipe); a line `!` makes it invalid. */
const cook = defineSink({
  name: 'test-cook',
  summary: 'test only: reads a recipe file that names more files',
  options: z.object({ recipe: z.string(), out: z.string().meta({ path: false }) }),
  examples: [],
  reads: {
    recipe: {
      async names(file) {
        const lines = readFileSync(file, 'utf8').split('\n').filter((l) => l !== '');
        const bad = lines.indexOf('!');
        if (bad >= 0) throw new CqpError('CONFIG', `${file}:${bad + 1}: field step: "!" is not a file`);
        return lines.map((l) => join(dirname(file), l));
      },
    },
  },
  create: notStarted,
});

const fakes: SinkDefinition[] = [journal, mirror, bare, inside, cook];

beforeAll(() => {
  (registry.sink as ComponentDefinition[]).push(...fakes);
});

afterAll(() => {
  const sinks = registry.sink as ComponentDefinition[];
  for (const fake of fakes) sinks.splice(sinks.indexOf(fake), 1);
});

function pipeline(sinks: string): { dir: string; file: string } {
  const dir = mkdtempSync(join(tmpdir(), 'cqp-caps-'));
  const file = join(dir, 'p.yaml');
  writeFileSync(file, `name: caps\nsource: { type: demo, count: 3 }\nsinks:\n${sinks}`);
  return { dir, file };
}

describe('sink capabilities, asked of the definition', () => {
  it('treats a sink that declares no positions as at-least-once: nothing to resume from, no end to report', async () => {
    const { file } = pipeline('  - { name: plain, type: test-bare, path: out.ndjson }\n');
    const plan = loadPipeline(file);
    const [sink] = plan.sinks;
    expect(sink?.exactlyOnce).toBe(false);
    expect(sink?.store).toBeUndefined();
    expect(sink?.logInput).toBeUndefined();
    expect(await resumePositions(plan.sinks)).toBeUndefined();
    expect(await sinkEnds(plan.sinks, undefined)).toEqual([]);
  });

  it('resumes the source from the smallest positions the exactly-once stores hold, read as each definition reads them', async () => {
    const { dir, file } = pipeline('  - { name: a, type: test-journal, file: a.log }\n  - { name: b, type: test-bare, path: b.ndjson }\n');
    const plan = loadPipeline(file);
    expect(plan.sinks.map((s) => [s.name, s.exactlyOnce, s.store])).toEqual([
      ['a', true, join(dir, 'a.log')],
      ['b', false, undefined],
    ]);
    held.set(join(dir, 'a.log'), { 'demo:x': '7', 'demo:y': '2' });
    expect(await resumePositions(plan.sinks)).toEqual({ 'demo:x': '7', 'demo:y': '2' });
    const ends = await sinkEnds(plan.sinks, undefined);
    expect(ends).toEqual([{ name: 'a', text: 'at demo:x:7, demo:y:2', short: false }]);
  });

  it('has a sink that follows logs read the command log another sink keeps, and refuses where: on it', async () => {
    const { dir, file } = pipeline('  - { name: log, type: test-journal, file: data/j.log }\n  - { name: views, type: test-mirror, into: data/v.db }\n');
    const plan = loadPipeline(file);
    const [writer, follower] = plan.sinks;
    expect(writer?.logInput).toBeUndefined();
    expect(follower?.logInput).toEqual({ path: join(dir, 'data/j.log'), follow: true, args: ['--read-log', join(dir, 'data/j.log'), '--follow'] });
    // The follower resumes from the log, not from the source: only the writer's store is asked.
    held.set(join(dir, 'data/j.log'), { 'demo:x': '4' });
    held.set(join(dir, 'data/v.db'), { 'log:abc': '1' });
    expect(await resumePositions(plan.sinks)).toEqual({ 'demo:x': '4' });

    const refused = pipeline('  - { name: log, type: test-journal, file: j.log }\n  - { name: views, type: test-mirror, into: v.db, where: "e.x > 1" }\n');
    expect(() => loadPipeline(refused.file)).toThrow(CqpError);
    expect(() => loadPipeline(refused.file)).toThrow(/a test-mirror sink follows the test-journal sink, so where: does not apply/);
  });

  it('rebuilds a store that declares a rebuild blue/green in a replay, through the option it names', async () => {
    const { dir, file } = pipeline('  - { name: views, type: test-mirror, into: data/v.db }\n  - { name: plain, type: test-bare, path: out.ndjson }\n');
    const log = join(dir, 'events.log');
    const writer = await openLogWriter(log, { fsync: 'never', warn: () => undefined });
    await writer.appendBatch([{ bytes: '{"id":1}', position: undefined }]);
    await writer.close();

    const plan = await planReplay({ log, pipeline: file });
    const [views, plain] = plan.sinks;
    expect(views?.action).toBe('replace');
    expect(views?.file?.target).toBe(join(dir, 'data/v.db'));
    expect(plain?.action).toBe('write');
    const run = plan.run.sinks.find((s) => s.name === 'views');
    expect(run?.options.into).toBe(views?.file?.temp);
    expect(run?.command.args).toContain(views?.file?.temp);
    expect(run?.command.args).not.toContain(join(dir, 'data/v.db'));
  });

  it('has a replay without stages run its one sink in its own process only when the definition says it may', async () => {
    const planned = async (sinks: string, stages = ''): Promise<string | undefined> => {
      const { dir, file } = pipeline(sinks);
      if (stages) writeFileSync(file, `${readFileSync(file, 'utf8')}stages:\n${stages}`);
      const log = join(dir, 'events.log');
      const writer = await openLogWriter(log, { fsync: 'never', warn: () => undefined });
      await writer.appendBatch([{ bytes: '{"id":1}', position: undefined }]);
      await writer.close();
      return sinkToRunHere((await planReplay({ log, pipeline: file })).run)?.name;
    };
    expect(await planned('  - { name: here, type: test-inside, path: out.ndjson }\n')).toBe('here');
    // Declaring nothing, it gets its own process; so do two sinks, a where:, and a sink behind stages.
    expect(await planned('  - { name: own, type: test-bare, path: out.ndjson }\n')).toBeUndefined();
    expect(await planned('  - { name: a, type: test-inside, path: a.ndjson }\n  - { name: b, type: test-inside, path: b.ndjson }\n')).toBeUndefined();
    expect(await planned('  - { name: w, type: test-inside, path: w.ndjson, where: "e.id > 0" }\n')).toBeUndefined();
    expect(await planned('  - { name: s, type: test-inside, path: s.ndjson }\n', '  - { name: m, filter: map, with: { expr: "e" } }\n')).toBeUndefined();
  });

  it('swaps a rebuilt store in with its companions as its definition lists them', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cqp-caps-'));
    const target = join(dir, 'v.db');
    const completed: string[] = [];
    const file = (temp: string, emptyWhenUnwritten: boolean): BlueGreenFile => ({
      sink: 'views',
      target,
      temp,
      option: 'into',
      locked: false,
      rebuild: { companions: ['.side', '.other'], emptyWhenUnwritten, complete: (t) => void completed.push(t) },
    });
    writeFileSync(target, 'old');
    writeFileSync(`${target}.side`, 'old side');
    writeFileSync(`${target}.other`, 'old other');
    const temp = `${target}.replay-${process.pid}`;
    writeFileSync(temp, 'new');
    writeFileSync(`${temp}.side`, 'new side');
    const swap = file(temp, false);
    await completeTemp(swap);
    commitTemp(swap);
    expect(completed).toEqual([temp]);
    expect(readFileSync(target, 'utf8')).toBe('new');
    // The new file's companion follows it; the old file's other companion, which the new one lacks, is gone.
    expect(readFileSync(`${target}.side`, 'utf8')).toBe('new side');
    expect(existsSync(`${target}.other`)).toBe(false);
    expect(existsSync(temp) || existsSync(`${temp}.side`)).toBe(false);

    // A sink that wrote nothing: an empty store only when the definition says that is what it makes.
    await expect(completeTemp(file(`${target}.replay-${process.pid}`, false))).rejects.toThrow(/did not create its new file/);
    const empty = file(`${target}.replay-${process.pid}`, true);
    await completeTemp(empty);
    commitTemp(empty);
    expect(readFileSync(target, 'utf8')).toBe('');
  });

  it('reads the files a sink declares it reads, and those they name: a change of their bytes changes the sink', async () => {
    const { dir, file } = pipeline('  - { name: meal, type: test-cook, recipe: r/recipe.txt, out: out }\n  - { name: plain, type: test-bare, path: out.ndjson }\n');
    mkdirSync(join(dir, 'r'));
    writeFileSync(join(dir, 'r/recipe.txt'), 'salt.txt\n');
    writeFileSync(join(dir, 'r/salt.txt'), 'a pinch');
    const first = loadPipeline(file);
    // An option the sink reads is a path: resolved against the pipeline's folder.
    expect(first.sinks[0]?.options).toEqual({ recipe: join(dir, 'r/recipe.txt'), out: 'out' });
    expect(await readComponentFiles(first)).toEqual([]);
    expect(filesRead(first)).toEqual([file, join(dir, 'r/recipe.txt'), join(dir, 'r/salt.txt')]);

    writeFileSync(join(dir, 'r/salt.txt'), 'a spoon');
    const second = loadPipeline(file);
    expect(await readComponentFiles(second)).toEqual([]);
    expect(reloadDiff(first, second).sinks).toEqual({ added: [], changed: ['meal'], removed: [] });

    writeFileSync(join(dir, 'r/salt.txt'), 'a pinch');
    const third = loadPipeline(file);
    await readComponentFiles(third);
    expect(reloadDiff(first, third).empty).toBe(true);
    expect(contentKey(third)).toBe(contentKey(first));

    writeFileSync(join(dir, 'r/recipe.txt'), 'salt.txt\n!\n');
    const bad = loadPipeline(file);
    expect(await readComponentFiles(bad)).toEqual([`meal: ${join(dir, 'r/recipe.txt')}:2: field step: "!" is not a file`]);
  });
});
