import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { BIN, collect, cqpAsync, parseLines, spawnCli } from '../helpers/cli.js';
import { eventually } from '../helpers/eventually.js';
import { runPipeline, tmpDir, type RunningPipeline, type StageStatus } from '../helpers/pipeline.js';

/**
 * `cqp tap` against a real `cqp run --metrics`: a demo source that does not end, a stage whose error
 * policy skips the sales of one ice cream (its expression throws for them), enrich, and two sinks, one
 * behind a where.
 */
function pipeline(rate: number): { dir: string; file: string } {
  const dir = tmpDir();
  const file = join(dir, 'tapped.yaml');
  writeFileSync(
    file,
    [
      'name: tapped',
      `source: { type: demo, count: 0, rate: ${rate} }`,
      'stages:',
      `  - { name: big, filter: where, with: { expr: "e.payload.qty !== 1 || (() => { throw new Error('one is too few') })()" }, onError: skip }`,
      '  - { name: enrich, filter: enrich }',
      'sinks:',
      '  - { name: out, type: file, path: out.ndjson }',
      `  - { name: audit, type: file, path: audit.ndjson, where: "e.header.eventType[0] === 'delete'" }`,
      '',
    ].join('\n'),
  );
  return { dir, file };
}

async function start(rate = 300): Promise<{ run: RunningPipeline; url: string }> {
  const { file } = pipeline(rate);
  const run = runPipeline(file, { metrics: true });
  const url = `http://${await run.address()}`;
  // Running once events reach the sinks.
  await eventually(async () => ((await run.stages()).find((s) => s.name === 'out')?.in ?? 0) > 0, { timeoutMs: 60_000, what: () => `events to reach the sink:\n${run.stderr()}` });
  return { run, url };
}

function stage(stages: StageStatus[], name: string): StageStatus {
  const found = stages.find((s) => s.name === name);
  if (!found) throw new Error(`no stage ${name} in /status`);
  return found;
}

interface Header {
  eventType: string[];
  detectionTimestamp?: string;
}

describe('cqp tap', () => {
  it('shows what a stage writes, what goes into one, and stops after --count', async () => {
    const { run, url } = await start();
    const outputs = await cqpAsync(['tap', '--url', url, '--outputs-of', 'enrich', '--count', '3']);
    expect(outputs.status, outputs.stderr).toBe(0);
    const written = parseLines(outputs.stdout);
    expect(written).toHaveLength(3);
    // enrich stamps the time it saw each event; what goes into it has none.
    for (const e of written) expect((e.header as Header).detectionTimestamp).toMatch(/^\d{4}-/);
    const inputs = await cqpAsync(['tap', '--url', url, '--inputs-of', 'enrich', '--count', '3']);
    expect(inputs.status, inputs.stderr).toBe(0);
    const read = parseLines(inputs.stdout);
    expect(read).toHaveLength(3);
    for (const e of read) {
      expect((e.header as Header).detectionTimestamp).toBeUndefined();
      expect((e.payload as { qty?: number }).qty).not.toBe(1);
    }
    // A sink's inputs are what passes its where.
    const audit = await cqpAsync(['tap', '--url', url, '--inputs-of', 'audit', '--count', '2']);
    expect(audit.status, audit.stderr).toBe(0);
    expect(parseLines(audit.stdout).map((e) => (e.header as Header).eventType[0])).toEqual(['delete', 'delete']);
    expect(run.exited()).toBeUndefined();
  }, 120_000);

  it('shows the events an error policy rejected, with the reason; --meta names the component and the time', async () => {
    const { url } = await start();
    const errors = await cqpAsync(['tap', '--url', url, '--errors-of', 'big', '--count', '2']);
    expect(errors.status, errors.stderr).toBe(0);
    const rejected = parseLines(errors.stdout);
    expect(rejected).toHaveLength(2);
    for (const r of rejected) {
      expect(r.reason).toBe('where: one is too few');
      expect((r.event as { payload: { qty: number } }).payload.qty).toBe(1);
    }
    const meta = await cqpAsync(['tap', '--url', url, '--outputs-of', 'b*', '--errors-of', 'b?g', '--meta', '--count', '20']);
    expect(meta.status, meta.stderr).toBe(0);
    const lines = parseLines(meta.stdout);
    expect(lines).toHaveLength(20);
    for (const line of lines) {
      expect(line.component).toBe('big');
      expect(Date.parse(line.at as string)).toBeGreaterThan(Date.now() - 120_000);
      expect(line.event).toHaveProperty('header');
      expect(Object.keys(line).sort()).toEqual('reason' in line ? ['at', 'component', 'event', 'reason'] : ['at', 'component', 'event']);
    }
  }, 120_000);

  it('keeps the events --where holds for, paces them by --limit, and stops quietly under head -1', async () => {
    const { url } = await start();
    const where = await cqpAsync(['tap', '--url', url, '--outputs-of', 'source', '--where', 'e.payload.qty > 3', '--count', '4']);
    expect(where.status, where.stderr).toBe(0);
    const kept = parseLines(where.stdout);
    expect(kept).toHaveLength(4);
    for (const e of kept) expect((e.payload as { qty: number }).qty).toBeGreaterThan(3);
    // Two a second: six events take more than two seconds.
    const started = Date.now();
    const limited = await cqpAsync(['tap', '--url', url, '--outputs-of', 'source', '--limit', '2', '--count', '6']);
    expect(limited.status, limited.stderr).toBe(0);
    expect(parseLines(limited.stdout)).toHaveLength(6);
    expect(Date.now() - started).toBeGreaterThan(2000);
    const head = await collect(spawn('sh', ['-c', `"${process.execPath}" "${BIN.cqp}" tap --url ${url} --outputs-of enrich | head -1`]));
    expect(head.status, head.stderr).toBe(0);
    expect(head.stderr).toBe('');
    expect(parseLines(head.stdout)).toHaveLength(1);
  }, 120_000);

  it('says what cannot be tapped, naming the components', async () => {
    const { url } = await start();
    const nothing = await cqpAsync(['tap', '--url', url, '--outputs-of', 'enrih']);
    expect(nothing.status).toBe(2);
    expect(nothing.stderr).toContain('--outputs-of "enrih": no component is named so (the components: source, big, enrich, out, audit)');
    const sink = await cqpAsync(['tap', '--url', url, '--outputs-of', 'out']);
    expect(sink.status).toBe(2);
    expect(sink.stderr).toContain('--outputs-of "out": out has none to tap');
    const none = await cqpAsync(['tap', '--url', url]);
    expect(none.status).toBe(2);
    expect(none.stderr).toContain('say what to tap');
    const badWhere = await cqpAsync(['tap', '--url', url, '--outputs-of', 'big', '--where', 'e.payload.qty >']);
    expect(badWhere.status).toBe(2);
    expect(badWhere.stderr).toContain('--where: cannot parse expression');
  }, 120_000);

  it('costs nothing untapped: the stages mirror only while a tap listens', async () => {
    const { run, url } = await start();
    const before = await run.stages();
    expect(before.map((s) => s.mirrored)).toEqual(before.map(() => 0));
    const tap = await cqpAsync(['tap', '--url', url, '--outputs-of', 'enrich', '--count', '5']);
    expect(tap.status, tap.stderr).toBe(0);
    // The counts come with the stages' reports, a few times a second.
    const tapped = await eventually(async () => {
      const stages = await run.stages();
      return stage(stages, 'enrich').mirrored >= 5 ? stages : undefined;
    }, { what: 'enrich to report what it mirrored' });
    expect(stage(tapped, 'big').mirrored).toBe(0);
    expect(stage(tapped, 'source').mirrored).toBe(0);
    // Once the tap has gone, the count stands still while the events go on.
    const settled = await eventually(
      async () => {
        const a = await run.stages();
        await new Promise((resolve) => setTimeout(resolve, 700));
        const b = await run.stages();
        return stage(b, 'enrich').mirrored === stage(a, 'enrich').mirrored && stage(b, 'out').in > stage(a, 'out').in ? b : undefined;
      },
      { timeoutMs: 20_000, what: 'enrich to stop mirroring once the tap has gone' },
    );
    expect(stage(settled, 'enrich').mirrored).toBeLessThan(stage(settled, 'enrich').out);
  }, 120_000);

  it("shows what a run: program writes, from the supervisor's pump", async () => {
    const dir = tmpDir();
    const file = join(dir, 'program.yaml');
    writeFileSync(file, ['name: program', 'source: { type: demo, count: 0, rate: 300 }', 'stages:', '  - { name: copy, run: ["cat"] }', 'sinks:', '  - { name: out, type: file, path: out.ndjson }', ''].join('\n'));
    const run = runPipeline(file, { metrics: true });
    const url = `http://${await run.address()}`;
    const outputs = await cqpAsync(['tap', '--url', url, '--outputs-of', 'copy', '--count', '3']);
    expect(outputs.status, outputs.stderr).toBe(0);
    expect(parseLines(outputs.stdout).map((e) => typeof (e.header as { eventId?: unknown }).eventId)).toEqual(['string', 'string', 'string']);
    const inputs = await cqpAsync(['tap', '--url', url, '--inputs-of', 'out', '--count', '2', '--meta']);
    expect(inputs.status, inputs.stderr).toBe(0);
    expect(parseLines(inputs.stdout).map((l) => l.component)).toEqual(['out', 'out']);
    expect(stage(await run.stages(), 'copy').mirrored).toBeGreaterThanOrEqual(5);
    // What the program rejects is its own business: it has no error policy of ours to report it.
    const errors = await cqpAsync(['tap', '--url', url, '--errors-of', 'copy']);
    expect(errors.status).toBe(2);
    expect(errors.stderr).toContain('--errors-of "copy": copy has none to tap');
  }, 120_000);

  it('goes on through a reload: the new process of a changed stage mirrors for the tap already listening', async () => {
    const dir = tmpDir();
    const file = join(dir, 'reloaded.yaml');
    const yaml = (v: number): string => ['name: reloaded', 'source: { type: demo, count: 0, rate: 300 }', 'stages:', `  - { name: tag, filter: map, with: { expr: "e.v = ${v}" } }`, 'sinks:', '  - { name: out, type: file, path: out.ndjson }', ''].join('\n');
    writeFileSync(file, yaml(1));
    const run = runPipeline(file, { metrics: true });
    const url = `http://${await run.address()}`;
    const tap = spawnCli('cqp', ['tap', '--url', url, '--outputs-of', 'tag']);
    let out = '';
    tap.stdout?.setEncoding('utf8').on('data', (t: string) => (out += t));
    await eventually(() => out.includes('"v":1'), { what: 'events of the first version through the tap' });
    writeFileSync(file, yaml(2));
    await eventually(() => out.includes('"v":2'), { timeoutMs: 30_000, what: () => `events of the reloaded stage through the tap; cqp run said:\n${run.stderr()}` });
    const exited = new Promise((resolve) => tap.once('exit', resolve));
    tap.kill('SIGINT');
    expect(await exited).toBe(0);
  }, 120_000);

  it('drops for a tap whose reader stalls, while the pipeline keeps its rate, and says how many', async () => {
    const rate = 1500;
    const { run, url } = await start(rate);
    // Every stage's output, with no limit: some 3 × 1500 events a second for the tap to read.
    const tap = spawnCli('cqp', ['tap', '--url', url, '--outputs-of', '*', '--limit', '1000000', '--meta']);
    let out = '';
    let err = '';
    tap.stderr?.setEncoding('utf8').on('data', (t: string) => (err += t));
    tap.stdout?.setEncoding('utf8').on('data', (t: string) => (out += t));
    await eventually(() => out.length > 0, { what: () => `the tap's first events (stderr: ${err})` });
    // Stop reading: the tap's stdout pipe fills, then the socket's buffers (a few MB), then its buffer in the supervisor.
    tap.stdout?.pause();
    const a = stage(await run.stages(), 'source');
    const t0 = Date.now();
    await new Promise((resolve) => setTimeout(resolve, 8000));
    const b = stage(await run.stages(), 'source');
    const perSecond = (b.out - a.out) / ((Date.now() - t0) / 1000);
    expect(perSecond, `source rate while the tap stalls`).toBeGreaterThan(rate * 0.7);
    const outEnd = stage(await run.stages(), 'out');
    expect(outEnd.in).toBeGreaterThan(a.out);
    tap.stdout?.resume();
    const dropped = await eventually(
      () => {
        const line = parseLines(out.slice(0, out.lastIndexOf('\n') + 1)).find((l) => typeof l.dropped === 'number');
        return line ? (line.dropped as number) : undefined;
      },
      { timeoutMs: 30_000, what: () => `a {"dropped"} line from the tap (stderr: ${err})` },
    );
    expect(dropped).toBeGreaterThan(0);
    const exited = new Promise((resolve) => tap.once('exit', resolve));
    tap.kill('SIGINT');
    expect(await exited).toBe(0);
    expect(err).toMatch(/cqp tap: dropped \d+ events: the tap read too slowly/);
  }, 120_000);
});
