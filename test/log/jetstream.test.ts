import { spawn, spawnSync, type ChildProcess, type SpawnSyncReturns } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createServer, Socket, type AddressInfo, type Server } from 'node:net';
import { join, resolve } from 'node:path';
import { connect, headers, type NatsConnection } from '@nats-io/transport-node';
import { jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { splitStamp } from '../../src/core/position.js';
import { BIN, cqp, shellCommand as cli } from '../helpers/cli.js';
import { eventually } from '../helpers/eventually.js';
import { service, uniqueName } from '../helpers/services.js';
import { dumpViews } from '../helpers/views.js';
import { sleep, tempDir } from './helpers.js';

// The command log on NATS JetStream (nats://HOST:PORT/STREAM), through the built CLI, against the real server.
const up = await service('nats');
const SERVER = '127.0.0.1:4222';
const ROOT = resolve(import.meta.dirname, '../..');
const VIEWS = join(ROOT, 'pipelines/views/ice-creams.yaml');
const LONG = 300_000;

function sh(script: string, cwd: string): SpawnSyncReturns<string> {
  return spawnSync('sh', ['-c', script], { cwd, encoding: 'utf8', maxBuffer: 256 << 20 });
}

/** The demo events with their stamps, and their texts without. */
function demo(dir: string, count: number, seed = 1): { stamped: string; texts: string[] } {
  const stamped = sh(cli('source', `demo --count ${count} --seed ${seed}`), dir).stdout;
  return { stamped, texts: stamped.trimEnd().split('\n').map((l) => splitStamp(l).text) };
}

describe.skipIf(!up)('the command log on JetStream', () => {
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  const streams: string[] = [];
  const newLog = (): string => {
    const name = uniqueName('cqp_test');
    streams.push(name);
    return `nats://${SERVER}/${name}`;
  };
  const count = async (url: string): Promise<number> => {
    try {
      return (await jsm.streams.info(url.split('/').at(-1) as string)).state.messages;
    } catch {
      return 0;
    }
  };

  beforeAll(async () => {
    nc = await connect({ servers: SERVER });
    jsm = await jetstreamManager(nc);
  });
  afterAll(async () => {
    const checkpoints = await new Kvm(nc).open('cqp_log_positions').catch(() => undefined);
    for (const s of streams) {
      await jsm.streams.delete(s).catch(() => undefined);
      await checkpoints?.purge(s).catch(() => undefined);
    }
    await nc?.close();
  });
  /** The positions checkpoint the writers of `url` stored, as stored. */
  const checkpointOf = async (url: string): Promise<{ logId: string; seq: number; id: string; positions: Record<string, string> } | undefined> => {
    const entry = await (await new Kvm(nc).open('cqp_log_positions')).get(url.split('/').at(-1) as string);
    return entry && entry.operation === 'PUT' ? (entry.json() as { logId: string; seq: number; id: string; positions: Record<string, string> }) : undefined;
  };
  /** Runs the log sink on `file` until it succeeds, while a killed writer's lease may still be held. */
  const appendAll = (log: string, file: string, dir: string): Promise<SpawnSyncReturns<string>> =>
    eventually(
      () => {
        const r = sh(`${cli('sink', `log --path ${log}`)} < ${file}`, dir);
        if (r.status === 0) return r;
        expect(r.stderr).toContain('another writer holds this log');
        return undefined;
      },
      { timeoutMs: 60_000, everyMs: 200, what: "the killed writer's lease to be free" },
    );

  test(
    'kill -9 of the log sink mid-stream three times, then a re-run: every event once, in order',
    async () => {
      const dir = tempDir();
      const log = newLog();
      const total = 6000;
      const { stamped, texts } = demo(dir, total, 7);
      writeFileSync(join(dir, 'in.ndjson'), stamped);
      const cuts: number[] = [];
      for (let round = 0; round < 3; round++) {
        const before = await count(log);
        const child = spawn('sh', ['-c', `${cli('sink', `log --path ${log}`)} < in.ndjson`], { cwd: dir, detached: true, stdio: 'ignore' });
        let done = false;
        const exited = new Promise<void>((r) =>
          child.on('exit', () => {
            done = true;
            r();
          }),
        );
        const target = before + 400 + round * 300;
        await eventually(async () => done || (await count(log)) >= target, { timeoutMs: 120_000, everyMs: 20, what: `the stream to hold ${target} events` });
        try {
          process.kill(-(child.pid as number), 'SIGKILL');
        } catch {
          // It ended before the kill (all appended, or refused): the checks below say which.
        }
        await exited;
        cuts.push(await count(log));
      }
      // Each kill landed mid-stream.
      expect(cuts.every((n) => n > 0 && n < total), `events after each kill: ${cuts.join(' ')}`).toBe(true);
      // A killed writer's lease is taken over at once once its process is gone; until its parent has
      // reaped it, the lease lapses within seconds (a refusal meanwhile names it).
      const final = await eventually(
        () => {
          const r = sh(`${cli('sink', `log --path ${log}`)} < in.ndjson`, dir);
          if (r.status === 0) return r;
          expect(r.stderr).toContain('another writer holds this log');
          return undefined;
        },
        { timeoutMs: 60_000, everyMs: 200, what: 'the killed writer\'s lease to be free' },
      );
      expect(final.stderr).toBe('');
      expect(final.status).toBe(0);
      const verify = cqp(['log', 'verify', log], { cwd: dir });
      expect(verify.stdout).toContain(`ok, ${total} records`);
      const cat = cqp(['log', 'cat', log], { cwd: dir });
      expect(cat.stdout.trimEnd().split('\n')).toEqual(texts);
    },
    LONG,
  );

  test(
    'a second writer is refused while the first holds the lease, naming it; a writer killed on this machine is taken over at once',
    async () => {
      const dir = tempDir();
      const log = newLog();
      const first = spawn(process.execPath, [BIN.sink, 'log', '--path', log], { cwd: dir, stdio: ['pipe', 'ignore', 'pipe'] });
      const exited = new Promise<void>((r) => first.on('exit', () => r()));
      first.stdin.write('{"a":1}\n');
      await eventually(async () => (await count(log)) === 1, { timeoutMs: 60_000, everyMs: 20, what: 'the first writer to append' });
      const second = sh(`echo '{"b":2}' | ${cli('sink', `log --path ${log}`)}`, dir);
      expect(second.status).toBe(1);
      expect(second.stderr).toContain('another writer holds this log');
      expect(second.stderr).toContain(`pid ${first.pid}`);
      expect(await count(log)).toBe(1);
      // The first writer dies without a word; its process is gone, so the next writer here need not wait.
      first.kill('SIGKILL');
      await exited;
      const next = sh(`echo '{"c":3}' | ${cli('sink', `log --path ${log}`)}`, dir);
      expect(next.stderr).toBe('');
      expect(next.status).toBe(0);
      expect(cqp(['log', 'cat', log], { cwd: dir }).stdout).toBe('{"a":1}\n{"c":3}\n');
    },
    LONG,
  );

  test(
    'the lease of a writer on another machine that stopped renewing it lapses, and the next writer takes over',
    async () => {
      const dir = tempDir();
      const log = newLog();
      const name = log.split('/').at(-1) as string;
      // A writer elsewhere took the lease and died: nothing renews the key.
      const kv = await new Kvm(nc).create('cqp_log_leases', { ttl: 5000, history: 1 });
      await kv.create(name, JSON.stringify({ holder: 'elsewhere pid 4242', host: 'elsewhere', pid: 4242, since: new Date().toISOString() }));
      const refused = sh(`echo '{"a":1}' | ${cli('sink', `log --path ${log}`)}`, dir);
      expect(refused.status).toBe(1);
      expect(refused.stderr).toContain('another writer holds this log (elsewhere pid 4242');
      const next = await eventually(
        () => {
          const r = sh(`echo '{"a":1}' | ${cli('sink', `log --path ${log}`)}`, dir);
          if (r.status === 0) return r;
          expect(r.stderr).toContain('another writer holds this log');
          return undefined;
        },
        { timeoutMs: 60_000, everyMs: 200, what: 'the lease to lapse' },
      );
      expect(next.stderr).toBe('');
      expect(cqp(['log', 'cat', log], { cwd: dir }).stdout).toBe('{"a":1}\n');
    },
    LONG,
  );

  test(
    'cat, stat and verify; --until by seq and by time; partitions on creation; a re-run appends nothing twice',
    async () => {
      const dir = tempDir();
      const log = newLog();
      const { stamped, texts } = demo(dir, 300, 3);
      const lines = stamped.trimEnd().split('\n');
      writeFileSync(join(dir, 'a.ndjson'), `${lines.slice(0, 200).join('\n')}\n`);
      writeFileSync(join(dir, 'b.ndjson'), stamped);
      expect(sh(`${cli('sink', `log --path ${log} --partitions 3`)} < a.ndjson`, dir).status).toBe(0);
      await sleep(20);
      const again = sh(`${cli('sink', `log --path ${log}`)} < b.ndjson`, dir);
      expect(again.stderr).toBe('');
      expect(again.status).toBe(0);
      const stat = cqp(['log', 'stat', log], { cwd: dir });
      expect(stat.status).toBe(0);
      expect(stat.stdout).toMatch(/records\s+300\n/);
      expect(stat.stdout).toMatch(/first seq\s+1\s/);
      expect(stat.stdout).toMatch(/last seq\s+300\s/);
      expect(stat.stdout).toMatch(/partitions\s+3/);
      const last = splitStamp(lines[299] as string).position;
      expect(stat.stdout).toContain(`positions   ${last?.source}:${last?.n}\n`);
      expect(cqp(['log', 'verify', log], { cwd: dir }).stdout).toContain('ok, 300 records');
      expect(cqp(['log', 'cat', log], { cwd: dir }).stdout.trimEnd().split('\n')).toEqual(texts);
      expect(cqp(['log', 'cat', log, '--until', '150'], { cwd: dir }).stdout.trimEnd().split('\n')).toEqual(texts.slice(0, 150));
      expect(cqp(['log', 'cat', log, '--from', '201'], { cwd: dir }).stdout.trimEnd().split('\n')).toEqual(texts.slice(200));
      const meta = cqp(['log', 'cat', log, '--meta', '--from', '200', '--until', '200'], { cwd: dir });
      const at200 = JSON.parse(meta.stdout) as { seq: number; time: string; event: unknown };
      expect(at200.seq).toBe(200);
      expect(at200.event).toEqual(JSON.parse(texts[199] as string));
      const byTime = cqp(['log', 'cat', log, '--until', at200.time], { cwd: dir });
      expect(byTime.status).toBe(0);
      expect(byTime.stdout.trimEnd().split('\n')).toEqual(texts.slice(0, 200));
      // The events went to the three partitions' subjects by entity key; the stream sequence orders them all.
      const name = log.split('/').at(-1) as string;
      const subjects = (await jsm.streams.info(name, { subjects_filter: '>' })).state.subjects ?? {};
      expect(Object.keys(subjects).sort()).toEqual([`cqp.${name}.0`, `cqp.${name}.1`, `cqp.${name}.2`]);
      expect(Object.values(subjects).reduce((a, b) => a + b, 0)).toBe(300);
    },
    LONG,
  );

  test(
    'a sqlite view following a JetStream log equals the same view from a file log, with --until too',
    () => {
      const dir = tempDir();
      const log = newLog();
      const { stamped } = demo(dir, 2000, 5);
      writeFileSync(join(dir, 'in.ndjson'), stamped);
      expect(sh(`${cli('sink', `log --path ${log}`)} < in.ndjson`, dir).status).toBe(0);
      expect(sh(`${cli('sink', 'log --path events.log')} < in.ndjson`, dir).status).toBe(0);
      const views = (db: string, from: string, ...more: string[]): void => {
        const r = cqp(['sqlite', '--db', db, '--views', VIEWS, '--read-log', from, ...more], { bin: 'sink', cwd: dir });
        expect(r.stderr).toBe('');
        expect(r.status).toBe(0);
      };
      views('js.db', log);
      views('file.db', 'events.log');
      // The views' positions name each log by its own id; everything else is equal.
      const dump = (db: string): Record<string, unknown[]> => {
        const d = dumpViews(join(dir, db));
        d.cqp_positions = (d.cqp_positions ?? []).map((row) => ({ ...(row as object), source: 'log' }));
        return d;
      };
      const fromJs = dump('js.db');
      expect(Object.values(fromJs).some((rows) => rows.length > 0)).toBe(true);
      expect(fromJs).toEqual(dump('file.db'));
      views('js-part.db', log, '--until', '700');
      views('file-part.db', 'events.log', '--until', '700');
      expect(dump('js-part.db')).toEqual(dump('file-part.db'));
      expect(dump('js-part.db')).not.toEqual(fromJs);
    },
    LONG,
  );

  test(
    'the connection dropped under a running sink: it retries, and every event acknowledged is stored once, in order',
    async () => {
      const dir = tempDir();
      const proxy = new CutProxy(4222);
      await proxy.listen();
      const name = newLog().split('/').at(-1) as string;
      const log = `nats://127.0.0.1:${proxy.port}/${name}`;
      const sink: ChildProcess = spawn(process.execPath, [BIN.sink, 'log', '--path', log], { cwd: dir, stdio: ['pipe', 'ignore', 'pipe'] });
      let stderr = '';
      sink.stderr?.on('data', (c: Buffer) => (stderr += c.toString()));
      const exited = new Promise<number | null>((r) => sink.on('exit', r));
      const { stamped, texts } = demo(dir, 1500, 9);
      const lines = stamped.trimEnd().split('\n');
      sink.stdin?.write(`${lines.slice(0, 500).join('\n')}\n`);
      await eventually(async () => (await count(log)) === 500, { timeoutMs: 60_000, everyMs: 20, what: 'the first 500 events stored' });
      await proxy.cut();
      sink.stdin?.write(`${lines.slice(500, 1000).join('\n')}\n`);
      await eventually(() => stderr.includes('retrying'), { timeoutMs: 60_000, everyMs: 20, what: 'the sink to notice the cut' });
      expect(await count(log)).toBe(500);
      await proxy.listen();
      sink.stdin?.write(`${lines.slice(1000).join('\n')}\n`);
      sink.stdin?.end();
      expect(await exited).toBe(0);
      await proxy.cut();
      expect(await count(log)).toBe(1500);
      expect(cqp(['log', 'cat', `nats://${SERVER}/${name}`], { cwd: dir }).stdout.trimEnd().split('\n')).toEqual(texts);
    },
    LONG,
  );

  test(
    'cqp run with its log on JetStream and a view following it, then cqp replay from that log: the same views',
    () => {
      const dir = tempDir();
      const log = newLog();
      writeFileSync(
        join(dir, 'p.yaml'),
        [
          'name: js',
          'source: { type: demo, count: 1500, seed: 4 }',
          'sinks:',
          `  - { name: log, type: log, path: "${log}" }`,
          `  - { name: views, type: sqlite, db: views.db, views: "${VIEWS}" }`,
          '',
        ].join('\n'),
      );
      writeFileSync(
        join(dir, 'r.yaml'),
        ['name: rebuild', 'source: { type: demo, count: 1 }', 'sinks:', `  - { name: views, type: sqlite, db: rebuilt.db, views: "${VIEWS}" }`, ''].join('\n'),
      );
      const run = cqp(['run', 'p.yaml'], { cwd: dir });
      expect(run.status, run.stderr).toBe(0);
      expect(cqp(['log', 'stat', log], { cwd: dir }).stdout).toMatch(/records\s+1500\n/);
      const replay = cqp(['replay', '--log', log, '--pipeline', 'r.yaml'], { cwd: dir });
      expect(replay.status, replay.stderr).toBe(0);
      expect(replay.stderr).toContain('at seq 1500 of 1500');
      const views = dumpViews(join(dir, 'views.db'));
      expect(Object.values(views).some((rows) => rows.length > 0)).toBe(true);
      expect(dumpViews(join(dir, 'rebuilt.db'))).toEqual(views);
      const part = cqp(['replay', '--log', log, '--pipeline', 'r.yaml', '--until', '600'], { cwd: dir });
      expect(part.status, part.stderr).toBe(0);
      expect(part.stderr).toContain('at seq 600 of 600');
    },
    LONG,
  );

  test(
    'a sink following a JetStream log (--read-log --follow) waits for the stream, prints appends as they come, and stops on SIGTERM',
    async () => {
      const dir = tempDir();
      const log = newLog();
      const follower = spawn(process.execPath, [BIN.sink, 'stdout', '--read-log', log, '--follow'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      follower.stdout?.on('data', (c: Buffer) => (out += c.toString()));
      const exited = new Promise<number | null>((r) => follower.on('close', r));
      const { stamped, texts } = demo(dir, 300, 2);
      const lines = stamped.trimEnd().split('\n');
      writeFileSync(join(dir, 'a.ndjson'), `${lines.slice(0, 100).join('\n')}\n`);
      writeFileSync(join(dir, 'b.ndjson'), stamped);
      expect(sh(`${cli('sink', `log --path ${log}`)} < a.ndjson`, dir).status).toBe(0);
      await eventually(() => out.split('\n').length > 100, { timeoutMs: 60_000, everyMs: 20, what: 'the follower to print 100 events' });
      expect(sh(`${cli('sink', `log --path ${log}`)} < b.ndjson`, dir).status).toBe(0);
      await eventually(() => out.split('\n').length > 300, { timeoutMs: 60_000, everyMs: 20, what: 'the follower to print 300 events' });
      follower.kill('SIGTERM');
      expect(await exited).toBe(0);
      expect(out.trimEnd().split('\n')).toEqual(texts);
    },
    LONG,
  );

  test(
    'positions checkpoint: after a kill -9 it lags the stream and names what the records up to it hold; a re-run appends every event once and leaves it at the end',
    async () => {
      const dir = tempDir();
      const log = newLog();
      const total = 6000;
      const { stamped, texts } = demo(dir, total, 12);
      const lines = stamped.trimEnd().split('\n');
      const positionAt = (seq: number): Record<string, string> => {
        const p = splitStamp(lines[seq - 1] as string).position;
        return p ? { [p.source]: p.n } : {};
      };
      writeFileSync(join(dir, 'in.ndjson'), stamped);
      const child = spawn('sh', ['-c', `${cli('sink', `log --path ${log}`)} < in.ndjson`], { cwd: dir, detached: true, stdio: 'ignore' });
      const exited = new Promise<void>((r) => child.on('exit', () => r()));
      await eventually(async () => (await count(log)) >= 2000, { timeoutMs: 120_000, everyMs: 20, what: 'the stream to hold 2000 events' });
      process.kill(-(child.pid as number), 'SIGKILL');
      await exited;
      const cut = await count(log);
      expect(cut).toBeLessThan(total);
      const cp = await checkpointOf(log);
      expect(cp, 'a checkpoint stored before the kill').toBeDefined();
      expect(cp?.seq).toBeGreaterThan(0);
      expect(cp?.seq).toBeLessThanOrEqual(cut);
      expect(cp?.positions).toEqual(positionAt(cp?.seq ?? 0));
      const final = await appendAll(log, 'in.ndjson', dir);
      expect(final.stderr).toBe('');
      expect(cqp(['log', 'cat', log], { cwd: dir }).stdout.trimEnd().split('\n')).toEqual(texts);
      const end = await checkpointOf(log);
      expect(end?.seq).toBe(total);
      expect(end?.positions).toEqual(positionAt(total));
      // A second re-run starts from the checkpoint and appends nothing.
      expect((await appendAll(log, 'in.ndjson', dir)).stderr).toBe('');
      expect(await count(log)).toBe(total);
    },
    LONG,
  );

  test(
    'a checkpoint ahead of the stream (the stream deleted and created again, or a checkpoint past its end or of another record) loses no event',
    async () => {
      const dir = tempDir();
      const log = newLog();
      const name = log.split('/').at(-1) as string;
      const { stamped, texts } = demo(dir, 500, 13);
      const lines = stamped.trimEnd().split('\n');
      writeFileSync(join(dir, 'a.ndjson'), `${lines.slice(0, 300).join('\n')}\n`);
      writeFileSync(join(dir, 'b.ndjson'), stamped);
      expect(sh(`${cli('sink', `log --path ${log}`)} < a.ndjson`, dir).status).toBe(0);
      expect((await checkpointOf(log))?.seq).toBe(300);
      // The same stream made again from its configuration: the same log id, no records.
      const { config } = await jsm.streams.info(name);
      await jsm.streams.delete(name);
      await jsm.streams.add(config);
      const same = sh(`${cli('sink', `log --path ${log}`)} < b.ndjson`, dir);
      expect(same.stderr).toBe('');
      expect(cqp(['log', 'cat', log], { cwd: dir }).stdout.trimEnd().split('\n')).toEqual(texts);
      // Deleted, and made again by the next writer: a new log id.
      await jsm.streams.delete(name);
      writeFileSync(join(dir, 'c.ndjson'), `${lines.slice(0, 100).join('\n')}\n`);
      expect(sh(`${cli('sink', `log --path ${log}`)} < c.ndjson`, dir).status).toBe(0);
      expect(cqp(['log', 'cat', log], { cwd: dir }).stdout.trimEnd().split('\n')).toEqual(texts.slice(0, 100));
      // A checkpoint past the stream's end, and one whose record is not the one the stream holds there
      // (as a stream restored from an older copy would leave them): neither is taken.
      const kv = await new Kvm(nc).open('cqp_log_positions');
      const held = (await checkpointOf(log)) as { logId: string; seq: number; id: string; positions: Record<string, string> };
      expect(held.seq).toBe(100);
      const at = (seq: number): Record<string, string> => {
        const p = splitStamp(lines[seq - 1] as string).position;
        return p ? { [p.source]: p.n } : {};
      };
      await kv.put(name, JSON.stringify({ ...held, seq: 300, positions: at(300) }));
      writeFileSync(join(dir, 'd.ndjson'), `${lines.slice(0, 200).join('\n')}\n`);
      expect(sh(`${cli('sink', `log --path ${log}`)} < d.ndjson`, dir).status).toBe(0);
      expect(cqp(['log', 'cat', log], { cwd: dir }).stdout.trimEnd().split('\n')).toEqual(texts.slice(0, 200));
      await kv.put(name, JSON.stringify({ ...held, seq: 200, id: 'not-the-record-at-200', positions: at(500) }));
      expect(sh(`${cli('sink', `log --path ${log}`)} < b.ndjson`, dir).status).toBe(0);
      expect(cqp(['log', 'cat', log], { cwd: dir }).stdout.trimEnd().split('\n')).toEqual(texts);
      expect(cqp(['log', 'verify', log], { cwd: dir }).stdout).toContain('ok, 500 records');
    },
    LONG,
  );

  test(
    "cqp log verify checks each record's CRC-32C: a record without one is counted unchecked, one whose bytes do not match is named",
    async () => {
      const dir = tempDir();
      const log = newLog();
      const name = log.split('/').at(-1) as string;
      const { stamped } = demo(dir, 50, 14);
      writeFileSync(join(dir, 'in.ndjson'), stamped);
      expect(sh(`${cli('sink', `log --path ${log}`)} < in.ndjson`, dir).status).toBe(0);
      const clean = cqp(['log', 'verify', log], { cwd: dir });
      expect(clean.status).toBe(0);
      expect(clean.stdout).toBe(`${log}: ok, 50 records\n`);
      // A record as a writer before checksums left it: no checksum header.
      const js = jetstream(nc);
      await js.publish(`cqp.${name}.0`, Buffer.from('{"old":true}'));
      const old = cqp(['log', 'verify', log], { cwd: dir });
      expect(old.status).toBe(0);
      expect(old.stdout).toContain(`${log}: ok, 51 records\n  1 of them carry no checksum`);
      // A record whose bytes are not those its checksum was taken over.
      const h = headers();
      h.set('Cqp-Crc32c', '00000000');
      await js.publish(`cqp.${name}.0`, Buffer.from('{"changed":true}'), { headers: h });
      const bad = cqp(['log', 'verify', log], { cwd: dir });
      expect(bad.status).toBe(1);
      expect(bad.stderr).toContain(`${log}: CORRUPT at record 52, stream sequence 52: checksum mismatch`);
      expect(bad.stderr).toContain(`51 good records before it; \`cqp log cat ${log} --until 51\` reads them`);
    },
    LONG,
  );

  test('unreachable server: a clear error at start', () => {
    const dir = tempDir();
    const r = sh(`echo '{"a":1}' | ${cli('sink', 'log --path nats://127.0.0.1:1/nothing_here')}`, dir);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain('nats://127.0.0.1:1/nothing_here: cannot reach the NATS server at 127.0.0.1:1');
    const cat = cqp(['log', 'cat', 'nats://127.0.0.1:1/nothing_here'], { cwd: dir });
    expect(cat.status).not.toBe(0);
    expect(cat.stderr).toContain('cannot reach the NATS server');
  });
});

/** A TCP proxy to the server that the test can cut (every connection dropped, none accepted) and restore. */
class CutProxy {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  port = 0;

  constructor(private readonly target: number) {}

  listen(): Promise<void> {
    const server = createServer((client) => {
      const upstream = new Socket();
      upstream.connect(this.target, '127.0.0.1');
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
        s.on('error', () => s.destroy());
      }
      client.pipe(upstream);
      upstream.pipe(client);
      client.on('close', () => upstream.destroy());
      upstream.on('close', () => client.destroy());
    });
    this.server = server;
    return new Promise((resolve) => server.listen(this.port, '127.0.0.1', () => {
      this.port = (server.address() as AddressInfo).port;
      resolve();
    }));
  }

  cut(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const s of this.sockets) s.destroy();
    return new Promise((resolve) => (server ? server.close(() => resolve()) : resolve()));
  }
}
