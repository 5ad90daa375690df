/**
 * Workers of a group sharing a partitioned JetStream log into one PostgreSQL view set, on the real
 * servers: failover after kill -9, a worker joining, fencing of a worker paused past its lease, and
 * the views checked against an independent fold of every event written.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { BIN, cqpAsync } from '../helpers/cli.js';
import { eventually } from '../helpers/eventually.js';
import { runPipeline, type PipelineStatus, type RunningPipeline } from '../helpers/pipeline.js';
import { descendants } from '../helpers/processes.js';
import { service, uniqueName } from '../helpers/services.js';

const natsUp = await service('nats');
const pgUp = await service('postgres');
const NATS = '127.0.0.1:4222';
const PG = 'postgres://postgres@127.0.0.1:5432/test';
const PARTITIONS = 8;
const KEYS = 64;

const VIEWS = `views:
  - table: last_n
    key: { column: id, path: id }
    columns:
      n: { path: n, type: integer }
    on:
      tick: upsert
  - table: totals
    key: { column: id, path: id }
    columns:
      count: { type: integer }
      sum: { type: integer }
    on:
      tick: { increment: { count: one, sum: n } }
  - table: groups
    key: { column: g, path: g }
    columns:
      count: { type: integer }
    on:
      tick: { increment: { count: one } }
`;

type Status = PipelineStatus & { group?: string; partitions?: number[] };

/** One event of key k: n grows along the log, so the last n of a key is its largest. */
function event(n: number): string {
  const k = n % KEYS;
  return JSON.stringify({ type: 'tick', id: `k${k}`, g: `g${k % 3}`, n, one: 1 });
}

/** The views as an independent fold of events 0..count-1 gives them. */
function fold(count: number): { totals: string[]; last: string[]; groups: string[] } {
  const totals = new Map<string, { count: number; sum: number; last: number }>();
  const groups = new Map<string, number>();
  for (let n = 0; n < count; n++) {
    const k = `k${n % KEYS}`;
    const t = totals.get(k) ?? { count: 0, sum: 0, last: -1 };
    t.count++;
    t.sum += n;
    t.last = n;
    totals.set(k, t);
    const g = `g${(n % KEYS) % 3}`;
    groups.set(g, (groups.get(g) ?? 0) + 1);
  }
  const keys = [...totals.keys()].sort();
  return {
    totals: keys.map((k) => `${k} ${totals.get(k)?.count} ${totals.get(k)?.sum}`),
    last: keys.map((k) => `${k} ${totals.get(k)?.last}`),
    groups: [...groups.keys()].sort().map((g) => `${g} ${groups.get(g)}`),
  };
}

/** A writer appending to the log while the test runs: `cqp-sink log` fed batch by batch. */
class Writer {
  readonly child: ChildProcess;
  written = 0;
  private timer: NodeJS.Timeout | undefined;
  readonly exit: Promise<number | null>;

  constructor(log: string, cwd: string) {
    this.child = spawn(process.execPath, [BIN.sink, 'log', '--path', log, '--partitions', String(PARTITIONS)], { cwd, stdio: ['pipe', 'ignore', 'inherit'] });
    this.exit = new Promise((resolve) => this.child.on('close', resolve));
  }

  write(count: number): void {
    const lines: string[] = [];
    for (let i = 0; i < count; i++) lines.push(event(this.written++));
    this.child.stdin?.write(`${lines.join('\n')}\n`);
  }

  /** Keeps writing `perTick` events every 50 ms until `stop`. */
  start(perTick: number): void {
    this.timer = setInterval(() => this.write(perTick), 50);
  }

  stop(): void {
    clearInterval(this.timer);
  }

  async end(): Promise<number | null> {
    this.stop();
    this.child.stdin?.end();
    return this.exit;
  }
}

describe.skipIf(!natsUp || !pgUp)('workers of a group on a partitioned JetStream log', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cqp-workers-'));
  let nc: NatsConnection;
  let db: pg.Client;
  const streams: string[] = [];
  const schemas: string[] = [];

  beforeAll(async () => {
    nc = await connect({ servers: NATS });
    db = new pg.Client({ connectionString: PG });
    await db.connect();
    writeFileSync(join(dir, 'views.yaml'), VIEWS);
  });
  afterAll(async () => {
    const jsm = await jetstreamManager(nc);
    for (const s of streams) await jsm.streams.delete(s).catch(() => undefined);
    for (const s of schemas) await db.query(`DROP SCHEMA IF EXISTS "${s}" CASCADE`).catch(() => undefined);
    await db.end();
    await nc.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** A stream, a schema and the worker pipeline reading the one into the other. */
  const setup = (): { log: string; schema: string; file: string } => {
    const stream = uniqueName('cqp_workers');
    const schema = uniqueName('cqp_workers');
    streams.push(stream);
    schemas.push(schema);
    const log = `nats://${NATS}/${stream}`;
    const file = join(dir, `${stream}.yaml`);
    writeFileSync(
      file,
      `name: worker\nsource: { type: log, path: "${log}", group: views }\nsinks:\n  - { name: views, type: postgres, url: "${PG}", schema: ${schema}, views: views.yaml }\n`,
    );
    return { log, schema, file };
  };

  const statusOf = async (w: RunningPipeline): Promise<Status> => (await w.status()) as Status;

  /** Waits until the workers hold every partition between them, each one once, each a fair share. */
  const shared = (workers: RunningPipeline[], what: string): Promise<number[][]> =>
    eventually(
      async () => {
        const held = await Promise.all(workers.map(async (w) => (await statusOf(w)).partitions ?? []));
        const all = held.flat().sort((a, b) => a - b);
        const fair = Math.ceil(PARTITIONS / workers.length);
        const ok = all.length === PARTITIONS && all.every((k, i) => k === i) && held.every((h) => h.length >= PARTITIONS - fair * (workers.length - 1) && h.length <= fair);
        return ok ? held : undefined;
      },
      { timeoutMs: 45_000, what: `${what}: the workers to hold every partition once, a fair share each` },
    );

  /** Waits until the views equal the fold of the `count` events written. */
  const viewsMatch = async (schema: string, count: number, workers: RunningPipeline[]): Promise<void> => {
    const want = fold(count);
    let got = { totals: [] as string[], last: [] as string[], groups: [] as string[] };
    const differ = (): string => {
      const lines: string[] = [];
      for (const k of ['totals', 'last', 'groups'] as const) {
        const w = new Set(want[k]);
        const g = new Set(got[k]);
        lines.push(`${k}: missing ${want[k].filter((x) => !g.has(x)).slice(0, 5).join('; ')} | unexpected ${got[k].filter((x) => !w.has(x)).slice(0, 5).join('; ')}`);
      }
      return `${lines.join('\n')}\n${workers.map((x) => x.stderr()).join('\n----\n')}`;
    };
    await eventually(
      async () => {
        const totals = (await db.query<{ id: string; count: string; sum: string }>(`SELECT id, count, sum FROM "${schema}".totals ORDER BY id`)).rows.map((r) => `${r.id} ${r.count} ${r.sum}`);
        const last = (await db.query<{ id: string; n: string }>(`SELECT id, n FROM "${schema}".last_n ORDER BY id`)).rows.map((r) => `${r.id} ${r.n}`);
        const groups = (await db.query<{ g: string; count: string }>(`SELECT g, count FROM "${schema}".groups ORDER BY g`)).rows.map((r) => `${r.g} ${r.count}`);
        // Sorted as JavaScript sorts, like the fold.
        totals.sort();
        last.sort();
        groups.sort();
        got = { totals, last, groups };
        return JSON.stringify(got) === JSON.stringify(want) ? true : undefined;
      },
      { timeoutMs: 60_000, what: () => `the views of ${schema} to equal the fold of ${count} events:\n${differ()}` },
    );
  };

  /** Every process of a worker: its cqp run and the components it started. */
  const tree = (w: RunningPipeline): number[] => [w.child.pid as number, ...descendants(w.child.pid as number)];

  const stopAll = async (workers: RunningPipeline[]): Promise<void> => {
    for (const w of workers) w.child.kill('SIGTERM');
    for (const w of workers) expect(await w.exitWithin(60_000), w.stderr()).toBe(0);
  };

  test('three workers share 8 partitions while the log is written; kill -9 of one; a fourth joins; the views equal the fold; all exit 0 on SIGTERM', async () => {
    const { log, schema, file } = setup();
    const writer = new Writer(log, dir);
    writer.write(2000);
    const workers = [0, 1, 2].map(() => runPipeline(file, { cwd: dir, metrics: true }));
    writer.start(40);
    const held = await shared(workers, 'three workers');
    expect(held.map((h) => h.length).sort()).toEqual([2, 3, 3]);

    // kill -9 of a whole worker (its cqp run and every process it started), as when a machine dies.
    const [dead, ...alive] = workers as [RunningPipeline, RunningPipeline, RunningPipeline];
    const orphaned = (await statusOf(dead)).partitions ?? [];
    for (const pid of tree(dead)) process.kill(pid, 'SIGKILL');
    await shared(alive, 'after kill -9');
    const taken = alive.map((w) => w.stderr()).join('');
    for (const k of orphaned) expect(taken).toMatch(new RegExp(`took partition ${k} \\(from \\d+, where the sinks stand\\)`));

    // A fourth worker joins: the others give partitions back, and it gets its share.
    const fourth = runPipeline(file, { cwd: dir, metrics: true });
    await shared([...alive, fourth], 'a fourth worker joined');
    expect(alive.map((w) => w.stderr()).join('')).toMatch(/released partition \d/);

    writer.stop();
    expect(await writer.end()).toBe(0);
    await viewsMatch(schema, writer.written, [...alive, fourth]);
    const metrics = await (await fetch(`http://${await fourth.address()}/metrics`)).text();
    expect(metrics).toMatch(/cqp_partition_lease\{group="views",partition="\d"\} 1/);
    await stopAll([...alive, fourth]);
    for (const w of [...alive, fourth]) expect(w.stderr()).toMatch(/group views: released partitions? [\d, ]+ on the way out/);
  }, 170_000);

  test('views kept by a reader of the whole log are carried on by a group, nothing applied twice', async () => {
    const { log, schema, file } = setup();
    const first = new Writer(log, dir);
    first.write(1500);
    expect(await first.end()).toBe(0);
    const whole = await cqpAsync(['postgres', '--url', PG, '--schema', schema, '--views', 'views.yaml', '--read-log', log], { bin: 'sink', cwd: dir });
    expect(whole.status, whole.stderr).toBe(0);
    await viewsMatch(schema, 1500, []);
    const more = new Writer(log, dir);
    more.written = 1500;
    more.write(700);
    expect(await more.end()).toBe(0);
    const worker = runPipeline(file, { cwd: dir, metrics: true });
    await worker.waitFor(/took partition \d \(after \d+, where the sinks stand in the whole log\)/);
    await viewsMatch(schema, 2200, [worker]);
    await stopAll([worker]);
  }, 120_000);

  test('a reader of the whole log refuses views a group kept per partition, naming the sink, the log and what to do; nothing applied twice', async () => {
    const { log, schema, file } = setup();
    const writer = new Writer(log, dir);
    writer.write(1200);
    expect(await writer.end()).toBe(0);
    const worker = runPipeline(file, { cwd: dir, metrics: true });
    await viewsMatch(schema, 1200, [worker]);
    await stopAll([worker]);
    const more = new Writer(log, dir);
    more.written = 1200;
    more.write(300);
    expect(await more.end()).toBe(0);
    // The sink reading the whole log itself.
    const sink = await cqpAsync(['postgres', '--url', PG, '--schema', schema, '--views', 'views.yaml', '--read-log', log], { bin: 'sink', cwd: dir });
    expect(sink.status, sink.stderr).toBe(2);
    expect(sink.stderr).toContain(`postgres sink, reading ${log}: `);
    expect(sink.stderr).toMatch(/log:[0-9a-f]+ read whole, but the positions kept are per part of it \(log:[0-9a-f]+\/p\d up to \d+.*`group: NAME`.*`cqp replay`/s);
    // The same views in a pipeline without the group.
    const whole = join(dir, `${schema}-whole.yaml`);
    writeFileSync(whole, `name: whole\nsource: { type: log, path: "${log}" }\nsinks:\n  - { name: views, type: postgres, url: "${PG}", schema: ${schema}, views: views.yaml }\n`);
    const run = await cqpAsync(['run', whole], { cwd: dir });
    // Refused at start, as a configuration: not restarted.
    expect(run.status, run.stderr).toBe(2);
    expect(run.stderr).not.toMatch(/restarting/);
    expect(run.stderr).toContain(`log source, reading ${log}: `);
    expect(run.stderr).toMatch(/read whole, but the positions kept are per part of it.*`group: NAME`.*`cqp replay`/s);
    await viewsMatch(schema, 1200, []);
    // Read by the group again, the views take the rest.
    const again = runPipeline(file, { cwd: dir, metrics: true });
    await viewsMatch(schema, 1500, [again]);
    await stopAll([again]);
  }, 120_000);

  test('a worker whose stage drops the stored event of a partition it takes over is not fenced: it carries on past it', async () => {
    const { log, schema, file } = setup();
    const writer = new Writer(log, dir);
    writer.write(1000);
    const first = runPipeline(file, { cwd: dir, metrics: true });
    writer.start(40);
    await shared([first], 'the first worker');
    // A second worker, as after a reload of its \`where\`: it drops every event written so far and
    // for a while yet, among them the stored event of each partition it takes from the first one.
    const from = writer.written + 1500;
    const dropping = join(dir, `${schema}-where.yaml`);
    writeFileSync(
      dropping,
      `name: worker\nsource: { type: log, path: "${log}", group: views }\nsinks:\n  - { name: views, type: postgres, url: "${PG}", schema: ${schema}, views: views.yaml, where: "e.n >= ${from}" }\n`,
    );
    const second = runPipeline(dropping, { cwd: dir, metrics: true });
    const held = await shared([first, second], 'two workers');
    // The second worker commits events past \`from\` for the partitions it took.
    const mine = (held[1] ?? []).map((k) => `/p${k}`);
    await eventually(
      async () => {
        const rows = (await db.query<{ source: string; n: string }>(`SELECT source, n FROM "${schema}".cqp_positions WHERE view = 'totals'`)).rows;
        const counts = await db.query<{ c: string }>(`SELECT count(*)::text AS c FROM "${schema}".last_n WHERE n >= $1`, [from]);
        return mine.every((p) => rows.some((r) => r.source.endsWith(p))) && Number(counts.rows[0]?.c) > 0 ? true : undefined;
      },
      { timeoutMs: 45_000, what: `the second worker to commit events from ${from} on` },
    );
    // Written well past \`from\`, so that every key's last event is one the second worker keeps.
    await eventually(() => (writer.written >= from + 8 * KEYS ? true : undefined), { timeoutMs: 30_000, what: `the log to be written past ${from + 8 * KEYS}` });
    writer.stop();
    expect(await writer.end()).toBe(0);
    // The last event of every key is applied, whichever worker read it.
    const want = fold(writer.written);
    let got: string[] = [];
    await eventually(
      async () => {
        const r = await db.query<{ id: string; n: string }>(`SELECT id, n FROM "${schema}".last_n ORDER BY id`);
        got = r.rows.map((x) => `${x.id} ${x.n}`).sort();
        return JSON.stringify(got) === JSON.stringify(want.last) ? true : undefined;
      },
      { timeoutMs: 60_000, what: () => `every key to hold its last event: missing ${want.last.filter((x) => !got.includes(x)).slice(0, 5).join('; ')}, unexpected ${got.filter((x) => !want.last.includes(x)).slice(0, 5).join('; ')}\n${first.stderr()}\n----\n${second.stderr()}` },
    );
    expect(second.stderr()).not.toMatch(/fenced|restarting/);
    await stopAll([first, second]);
  }, 120_000);

  test('fencing: a worker paused past its lease is taken over; resumed, its stale batch is rolled back and reported, and the views stay right', async () => {
    const { log, schema, file } = setup();
    const writer = new Writer(log, dir);
    writer.write(1000);
    const workers = [0, 1].map(() => runPipeline(file, { cwd: dir, metrics: true }));
    writer.start(60);
    await shared(workers, 'two workers');
    const [paused, other] = workers as [RunningPipeline, RunningPipeline];
    const status = await statusOf(paused);
    const sinkPid = status.stages.find((s) => s.name === 'views')?.pid as number;
    const sourceAt = (s: Status): number => s.stages.find((x) => x.name === 'source')?.out ?? 0;
    // The sink first, so that events pile up in front of it, then everything else of that worker.
    process.kill(sinkPid, 'SIGSTOP');
    const before = sourceAt(await statusOf(paused));
    await eventually(async () => sourceAt(await statusOf(paused)) > before + 300, { timeoutMs: 30_000, what: 'events to pile up in front of the paused sink' });
    const stopped = tree(paused);
    for (const pid of stopped) process.kill(pid, 'SIGSTOP');
    // Its leases lapse; the other worker takes every partition and commits past where the paused one stood.
    const committed = async (): Promise<Map<string, number>> =>
      new Map((await db.query<{ source: string; n: string }>(`SELECT source, n FROM "${schema}".cqp_positions WHERE view = 'totals'`)).rows.map((r) => [r.source, Number(r.n)]));
    const atPause = await committed();
    await eventually(async () => ((await statusOf(other)).partitions?.length === PARTITIONS ? true : undefined), { timeoutMs: 30_000, what: 'the other worker to take every partition' });
    const stolen = status.partitions ?? [];
    await eventually(
      async () => {
        const now = await committed();
        return stolen.every((k) => [...now].some(([source, n]) => source.endsWith(`/p${k}`) && n > ([...atPause].find(([s]) => s === source)?.[1] ?? 0)));
      },
      { timeoutMs: 30_000, what: 'the other worker to commit for the partitions it took over' },
    );
    // Everything but the sink first: the source finds its leases taken and hands nothing more on.
    for (const pid of stopped) if (pid !== sinkPid) process.kill(pid, 'SIGCONT');
    await paused.waitFor(/lost partition \d \(taken by /, 30_000);
    // The sink still has the events read before the pause in front of it: its batch is refused.
    process.kill(sinkPid, 'SIGCONT');
    await paused.waitFor(/fenced: another worker of group views has committed log:[0-9a-f]+\/p\d+ up to \d+ since this one saw (?:\d+|nothing) of it .*rolled back/, 30_000);
    // It starts again from where the views stand and gets its share back.
    await shared(workers, 'the paused worker back');
    writer.stop();
    expect(await writer.end()).toBe(0);
    await viewsMatch(schema, writer.written, workers);
    await stopAll(workers);
  }, 170_000);
});
