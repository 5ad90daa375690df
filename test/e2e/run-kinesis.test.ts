import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ListShardsCommand, SplitShardCommand } from '@aws-sdk/client-kinesis';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cqp, cqpAsync } from '../helpers/cli.js';
import { eventually, GiveUp } from '../helpers/eventually.js';
import { runPipeline, type RunningPipeline } from '../helpers/pipeline.js';
import { describeProcesses, descendants } from '../helpers/processes.js';
import { createStream, putRecords, startKinesalite, waitActive, type Kinesalite } from '../helpers/kinesalite.js';

const STREAM = 'orders';
const EVENTS = 50_000;
const KEYS = 200;

let k: Kinesalite;
/** Set when the test is over, so a putter left behind by a failure stops. */
let over = false;

beforeAll(async () => {
  k = await startKinesalite();
});

afterAll(async () => {
  over = true;
  await k?.close();
});

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // Already gone.
  }
}

/** A machine crash: the supervisor and every process it started die at once, none of them flushing anything. */
async function crash(p: RunningPipeline): Promise<number> {
  const root = p.child.pid as number;
  // Freeze the whole tree first, so no process sees another die (an EOF would let a sink flush and exit cleanly).
  signal(root, 'SIGSTOP');
  let tree = descendants(root);
  for (const pid of tree) signal(pid, 'SIGSTOP');
  tree = descendants(root);
  for (const pid of tree) signal(pid, 'SIGSTOP');
  for (const pid of [root, ...tree]) signal(pid, 'SIGKILL');
  await p.exit;
  expect(p.child.signalCode).toBe('SIGKILL');
  // Wait until every one of them is gone (a stage still holding the log's lock would refuse the restart).
  const running = (): number[] =>
    tree.filter((pid) => {
      try {
        return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
      } catch {
        return false;
      }
    });
  await eventually(() => running().length === 0, { everyMs: 20, what: () => `the killed processes to be gone; left:\n${describeProcesses(running())}` });
  return tree.length;
}

/** `cqp log stat`, run without blocking the event loop kinesalite shares with this test. */
function logStat(log: string): Promise<{ records: number; sources: string[] }> {
  return cqpAsync(['log', 'stat', log]).then(({ status, stdout }) => {
    // Before the log exists there is nothing in it.
    if (status !== 0) return { records: 0, sources: [] };
    const sources = [...stdout.matchAll(/(kinesis:\S+):/g)].map((m) => m[1] as string);
    return { records: Number(/^records\s+(\d+)/m.exec(stdout)?.[1] ?? 0), sources };
  });
}

async function logCount(log: string): Promise<number> {
  return (await logStat(log)).records;
}

/** Waits for `check`, failing at once when the run has exited. */
function until(what: string, check: () => boolean | Promise<boolean>, p?: RunningPipeline): Promise<boolean> {
  return eventually(
    async () => {
      if (await check()) return true;
      if (p && p.exited() !== undefined) throw new GiveUp(`cqp run exited while waiting for ${what}:\n${p.stderr()}`);
      return false;
    },
    { timeoutMs: 45_000, everyMs: 200, what: () => `${what}${p ? `; stderr:\n${p.stderr()}` : ''}` },
  );
}

/**
 * The stream's records: each an NDJSON text of 1–3 events of one key, in per-key order, with the key as
 * the partition key. A fixed generator, so runs are alike.
 */
function records(): Array<{ key: string; data: string }> {
  let seed = 42;
  const random = (n: number): number => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };
  const next = new Array<number>(KEYS).fill(0);
  const out: Array<{ key: string; data: string }> = [];
  let events = 0;
  while (events < EVENTS) {
    const key = random(KEYS);
    const roll = random(10);
    const lines = Math.min(EVENTS - events, roll === 0 ? 3 : roll === 1 ? 2 : 1);
    let data = '';
    for (let j = 0; j < lines; j++) {
      const i = next[key] as number;
      next[key] = i + 1;
      data += `${JSON.stringify({ k: `k${key}`, i, id: `k${key}-${i}`, note: 'x'.repeat(random(60)) })}\n`;
    }
    events += lines;
    out.push({ key: `k${key}`, data });
  }
  return out;
}

async function openShards(): Promise<Array<{ id: string; lo: bigint; hi: bigint }>> {
  const out = await k.client.send(new ListShardsCommand({ StreamName: STREAM }));
  return (out.Shards ?? [])
    .filter((s) => s.SequenceNumberRange?.EndingSequenceNumber === undefined)
    .map((s) => ({ id: s.ShardId as string, lo: BigInt(s.HashKeyRange?.StartingHashKey as string), hi: BigInt(s.HashKeyRange?.EndingHashKey as string) }));
}

/** Splits an open shard at the middle of its hash range. */
async function split(shardId: string): Promise<void> {
  const shard = (await openShards()).find((s) => s.id === shardId);
  if (!shard) throw new Error(`shard ${shardId} is not open`);
  await k.client.send(new SplitShardCommand({ StreamName: STREAM, ShardToSplit: shard.id, NewStartingHashKey: String((shard.lo + shard.hi) / 2n) }));
  await waitActive(k.client, STREAM);
}

describe('cqp run with a kinesis source', () => {
  it('keeps every record exactly once and per-key order across a 4 → 6 reshard, a kill -9 and a restart', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cqp-run-kinesis-'));
    const file = join(dir, 'pipeline.yaml');
    const log = join(dir, 'out/events.log');
    writeFileSync(
      file,
      `name: kinesis-orders
source: { type: kinesis, stream: ${STREAM}, endpoint: "${k.endpoint}", region: us-east-1, start: trim-horizon, pollMs: 50 }
stages:
  - { name: mark, filter: map, with: { expr: "e.seen = 1" } }
sinks:
  - { name: log, type: log, path: out/events.log }
  - { name: views, type: sqlite, db: out/views.db }
`,
    );
    await createStream(k.client, STREAM, 4);
    const all = records();
    const eventsIn = (list: typeof all): number => list.reduce((n, r) => n + r.data.split('\n').length - 1, 0);
    // A fifth of the stream is waiting when the pipeline starts; the rest arrives while it runs.
    const first = Math.floor(all.length / 5);
    await putRecords(k.client, STREAM, all.slice(0, first));

    const p1 = runPipeline(file);
    await until('the first events in the log', async () => (await logCount(log)) > 2000, p1);

    // The rest, in PutRecords calls of 500, at most LEAD events ahead of the log (so records still
    // arrive after the crash), with a split after 35% and after 65% of the stream.
    const LEAD = 8000;
    let known = 0;
    const progress = { split: 0, put: eventsIn(all.slice(0, first)), done: false };
    const putter = (async () => {
      for (let at = first; at < all.length && !over; at += 500) {
        if (progress.split === 0 && at >= all.length * 0.35) {
          await split('shardId-000000000000');
          progress.split = 1;
        }
        if (progress.split === 1 && at >= all.length * 0.65) {
          await split('shardId-000000000001');
          progress.split = 2;
        }
        const chunk = all.slice(at, at + 500);
        await putRecords(k.client, STREAM, chunk);
        progress.put += eventsIn(chunk);
        while (progress.put - known > LEAD && !over) {
          known = await logCount(log);
          if (progress.put - known > LEAD) await new Promise((r) => setTimeout(r, 100));
        }
      }
      progress.done = true;
    })();

    // Crash once the log holds events of a shard the first split made, while records keep arriving.
    await until(
      'events of a child shard in the log',
      async () => progress.split >= 1 && (await logStat(log)).sources.some((s) => /shardId-00000000000[45]$/.test(s)),
      p1,
    );
    const killed = await crash(p1);
    expect(killed).toBeGreaterThanOrEqual(3);
    const atCrash = await logCount(log);
    expect(progress.done).toBe(false);
    expect(atCrash).toBeLessThan(EVENTS);

    const p2 = runPipeline(file);
    await putter;
    expect(progress.split).toBe(2);
    expect((await openShards()).length).toBe(6);
    await until('every event in the log', async () => (await logCount(log)) >= EVENTS, p2);
    // Whatever is still in flight would show up now as a repeat.
    await new Promise((r) => setTimeout(r, 500));
    p2.child.kill('SIGTERM');
    const exit = { code: await p2.exit, signal: p2.child.signalCode };
    expect(exit, p2.stderr()).toEqual({ code: 0, signal: null });
    expect(p2.stderr()).not.toMatch(/exited unexpectedly|refused/);
    // The restart resumed each shard where the log stopped, not at the trim horizon: at most one
    // multi-line record per shard (8, counting closed ones) is read again.
    const reread = Number(/([\d,]+) events? in/.exec(p2.stderr())?.[1]?.replaceAll(',', ''));
    expect(reread).toBeGreaterThanOrEqual(EVENTS - atCrash);
    expect(reread).toBeLessThanOrEqual(EVENTS - atCrash + 3 * 8);

    const cat = cqp(['log', 'cat', log]);
    expect(cat.status, cat.stderr).toBe(0);
    const logged = cat.stdout.trim().split('\n').map((l) => JSON.parse(l) as { k: string; i: number; id: string; seen?: number });
    expect(logged.length).toBe(EVENTS);
    expect(eventsIn(all)).toBe(EVENTS);
    const seen = new Set<string>();
    const last = new Map<string, number>();
    const perKey = new Map<string, number>();
    const outOfOrder: string[] = [];
    for (const e of logged) {
      expect(e.seen).toBe(1);
      expect(seen.has(e.id), `${e.id} twice`).toBe(false);
      seen.add(e.id);
      if ((last.get(e.k) ?? -1) >= e.i) outOfOrder.push(`${e.k}: ${last.get(e.k)} before ${e.i}`);
      last.set(e.k, e.i);
      perKey.set(e.k, (perKey.get(e.k) ?? 0) + 1);
    }
    expect(outOfOrder.slice(0, 5)).toEqual([]);
    // Each key's counter runs from 0 with no gap: together with no repeats, every event is there once.
    for (const [key, i] of last) expect(perKey.get(key), key).toBe(i + 1);

    // The view follows the log: it holds the same events, each once.
    const db = new Database(join(dir, 'out/views.db'), { readonly: true });
    try {
      const row = db.prepare('SELECT count(*) AS n, count(DISTINCT event_id) AS ids FROM events').get() as { n: number; ids: number };
      expect(row).toEqual({ n: EVENTS, ids: EVENTS });
    } finally {
      db.close();
    }
  }, 90_000);
});
