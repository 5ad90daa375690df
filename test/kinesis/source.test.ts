import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { eventually } from '../helpers/eventually.js';
import { ListShardsCommand, MergeShardsCommand, type Shard, SplitShardCommand } from '@aws-sdk/client-kinesis';
import { compareN } from '../../src/core/position.js';
import { CqpError } from '../../src/core/errors.js';
import { parseStart } from '../../src/sources/kinesis.js';
import {
  createStream,
  type Kinesalite,
  positionsOf,
  putRecords,
  type ReadLine,
  readWithSource,
  startKinesalite,
  waitActive,
} from '../helpers/kinesalite.js';

let k: Kinesalite;
beforeAll(async () => {
  k = await startKinesalite();
});
afterAll(async () => {
  await k?.close();
});

function events(from: number, to: number, keys: number): Array<{ key: string; data: string }> {
  const out: Array<{ key: string; data: string }> = [];
  for (let i = from; i < to; i++) {
    const key = `k${i % keys}`;
    out.push({ key, data: `${JSON.stringify({ id: key, i, payload: { name: 'Vanilla Toffee Bar Crunch', qty: i % 7 } })}\n` });
  }
  return out;
}

/** Asserts every i in [0, total) once, and i rising per key. */
function expectEachOnceInKeyOrder(lines: readonly ReadLine[], total: number): void {
  const seen = new Set<number>();
  const lastByKey = new Map<string, number>();
  for (const l of lines) {
    const i = l.event['i'] as number;
    const key = l.event['id'] as string;
    expect(seen.has(i), `event ${i} read twice`).toBe(false);
    seen.add(i);
    const last = lastByKey.get(key) ?? -1;
    expect(i, `key ${key}: event ${i} after ${last}`).toBeGreaterThan(last);
    lastByKey.set(key, i);
  }
  expect(seen.size).toBe(total);
}

/** Asserts positions rise within each shard. */
function expectShardOrder(lines: readonly ReadLine[]): void {
  const last = new Map<string, string>();
  for (const l of lines) {
    const prev = last.get(l.source);
    if (prev !== undefined) expect(compareN(l.n, prev), `${l.source}: ${l.n} after ${prev}`).toBeGreaterThan(0);
    last.set(l.source, l.n);
  }
}

async function shardsOf(stream: string): Promise<Shard[]> {
  return (await k.client.send(new ListShardsCommand({ StreamName: stream }))).Shards ?? [];
}

describe('cqp-source kinesis', () => {
  test('reads 20k records from 4 shards: every record once, order kept per key and per shard', async () => {
    await createStream(k.client, 'big', 4);
    await putRecords(k.client, 'big', events(0, 20_000, 300));
    const { lines } = await readWithSource({ stream: 'big', endpoint: k.endpoint, pollMs: 20, maxIdleMs: 300 });
    expectEachOnceInKeyOrder(lines, 20_000);
    expectShardOrder(lines);
    expect(new Set(lines.map((l) => l.source))).toEqual(
      new Set([0, 1, 2, 3].map((s) => `kinesis:big/shardId-00000000000${s}`)),
    );
  });

  test('resumes from a PositionMap: the two runs together hold every record once', async () => {
    // The 20k stream of the test above: 5000 records a shard, more than one read of a shard takes.
    const first = await readWithSource(
      { stream: 'big', endpoint: k.endpoint, pollMs: 20, maxIdleMs: 300 },
      { stopWhen: (lines) => lines.length >= 1 },
    );
    expect(first.lines.length).toBeGreaterThan(0);
    expect(first.lines.length).toBeLessThan(5000);
    await putRecords(k.client, 'big', events(20_000, 21_000, 300));
    const second = await readWithSource({ stream: 'big', endpoint: k.endpoint, pollMs: 20, maxIdleMs: 300 }, { resume: positionsOf(first.lines) });
    expectEachOnceInKeyOrder([...first.lines, ...second.lines], 21_000);
    expectShardOrder([...first.lines, ...second.lines]);
  });

  test('--start latest reads only records put after the start', async () => {
    await createStream(k.client, 'latest', 2);
    await putRecords(k.client, 'latest', events(0, 500, 10));
    const before = k.calls.get('GetRecords') ?? 0;
    // Ends once the 300 new records are in (the idle limit is only a backstop: under load the put below
    // can take longer than any short idle time, and the reader would end before the records arrive).
    const run = readWithSource({ stream: 'latest', endpoint: k.endpoint, pollMs: 20, maxIdleMs: 60_000, start: 'latest' }, { stopWhen: (lines) => lines.length >= 300 });
    // Once both shards have been read from, the reader holds its LATEST iterators: put the new records.
    await eventually(() => (k.calls.get('GetRecords') ?? 0) >= before + 2, { everyMs: 5, what: 'the reader to call GetRecords on both shards' });
    await putRecords(k.client, 'latest', events(500, 800, 10));
    const { lines } = await run;
    expectEachOnceInKeyOrder(
      lines.map((l) => ({ ...l, event: { ...l.event, i: (l.event['i'] as number) - 500 } })),
      300,
    );
  });

  test('--start at-timestamp:ISO reads the records that arrived from that time on', async () => {
    await createStream(k.client, 'since', 2);
    await putRecords(k.client, 'since', events(0, 100, 20));
    await new Promise((r) => setTimeout(r, 100));
    const mid = new Date().toISOString();
    await new Promise((r) => setTimeout(r, 100));
    // Every shard gets records after the time (kinesalite never answers AT_TIMESTAMP on a shard without any).
    await putRecords(k.client, 'since', events(100, 200, 20));
    const { lines } = await readWithSource({ stream: 'since', endpoint: k.endpoint, pollMs: 20, maxIdleMs: 300, start: `at-timestamp:${mid}` });
    expectEachOnceInKeyOrder(
      lines.map((l) => ({ ...l, event: { ...l.event, i: (l.event['i'] as number) - 100 } })),
      100,
    );
  });

  test('records holding several lines (CRLF, blank lines) give one event per line with sub-positions', async () => {
    await createStream(k.client, 'multi', 1);
    await putRecords(k.client, 'multi', [
      { key: 'a', data: '{"id":"a","i":0}\n{"id":"a","i":1}\r\n\n{"id":"a","i":2}' },
      { key: 'a', data: '{"id":"a","i":3}\n' },
      { key: 'a', data: '\r\n   \n' },
      { key: 'a', data: '\ufeff{"id":"a","i":4}\n{"id":"a","i":5}\n' },
    ]);
    const { lines } = await readWithSource({ stream: 'multi', endpoint: k.endpoint, pollMs: 20, maxIdleMs: 300 });
    expect(lines.map((l) => l.event['i'])).toEqual([0, 1, 2, 3, 4, 5]);
    const [r0, r1, r3] = [lines[0]?.n.split('.')[0], lines[3]?.n, lines[4]?.n.split('.')[0]];
    expect(lines.slice(0, 3).map((l) => l.n)).toEqual([`${r0}.0`, `${r0}.1`, `${r0}.2`]);
    expect(r1).not.toContain('.');
    expect(lines.slice(4).map((l) => l.n)).toEqual([`${r3}.0`, `${r3}.1`]);
    expectShardOrder(lines);

    // A sink that applied only the first line of the first record resumes at that record, and gets the rest.
    const partial = await readWithSource(
      { stream: 'multi', endpoint: k.endpoint, pollMs: 20, maxIdleMs: 300 },
      { resume: { [lines[0]?.source as string]: `${r0}.0` } },
    );
    expect(partial.lines.map((l) => l.event['i'])).toEqual([0, 1, 2, 3, 4, 5]);
    const whole = await readWithSource(
      { stream: 'multi', endpoint: k.endpoint, pollMs: 20, maxIdleMs: 300 },
      { resume: { [lines[0]?.source as string]: r0 as string } },
    );
    expect(whole.lines.map((l) => l.event['i'])).toEqual([3, 4, 5]);
  });

  test('a line that is not a JSON object follows the error policy', async () => {
    await createStream(k.client, 'bad', 1);
    await putRecords(k.client, 'bad', [
      { key: 'a', data: '{"i":0}\nnot json\n[1,2]\n{"i":1}\n' },
      { key: 'a', data: '{"i":2}' },
    ]);
    const skipped = await readWithSource({ stream: 'bad', endpoint: k.endpoint, pollMs: 20, maxIdleMs: 300 }, { mode: 'skip' });
    expect(skipped.lines.map((l) => l.event['i'])).toEqual([0, 1, 2]);
    expect(skipped.warnings.join('\n')).toMatch(/:2: invalid JSON/);
    expect(skipped.warnings.join('\n')).toMatch(/:3: not a JSON object/);

    const failed = readWithSource({ stream: 'bad', endpoint: k.endpoint, pollMs: 20, maxIdleMs: 300 }, { mode: 'fail' });
    await expect(failed).rejects.toThrow(/stdin:2: invalid JSON.*\n {2}not json/);
  });

  test('a split and a merge while reading: nothing lost, parents before children, order kept per key', async () => {
    await createStream(k.client, 'reshard', 2);
    await putRecords(k.client, 'reshard', events(0, 3000, 40));
    let resharded = false;
    const { lines } = await readWithSource(
      { stream: 'reshard', endpoint: k.endpoint, pollMs: 20, maxIdleMs: 600 },
      {
        onBatch: async () => {
          if (resharded) return;
          resharded = true;
          // Split shard 0 at the middle of its hash range, then merge its upper half with shard 1.
          const [s0] = await shardsOf('reshard');
          const lo = BigInt(s0?.HashKeyRange?.StartingHashKey ?? '0');
          const hi = BigInt(s0?.HashKeyRange?.EndingHashKey ?? '0');
          await k.client.send(
            new SplitShardCommand({ StreamName: 'reshard', ShardToSplit: 'shardId-000000000000', NewStartingHashKey: String((lo + hi) / 2n) }),
          );
          await waitActive(k.client, 'reshard');
          await putRecords(k.client, 'reshard', events(3000, 5000, 40));
          await k.client.send(
            new MergeShardsCommand({ StreamName: 'reshard', ShardToMerge: 'shardId-000000000003', AdjacentShardToMerge: 'shardId-000000000001' }),
          );
          await waitActive(k.client, 'reshard');
          await putRecords(k.client, 'reshard', events(5000, 7000, 40));
        },
      },
    );
    expect(resharded).toBe(true);
    expectEachOnceInKeyOrder(lines, 7000);
    expectShardOrder(lines);
    const shards = await shardsOf('reshard');
    expect(shards).toHaveLength(5);
    const firstAt = (id: string): number => lines.findIndex((l) => l.source.endsWith(`/${id}`));
    const lastAt = (id: string): number => lines.findLastIndex((l) => l.source.endsWith(`/${id}`));
    for (const child of shards) {
      const parents = [child.ParentShardId, child.AdjacentParentShardId].filter((p): p is string => p !== undefined);
      for (const parent of parents) {
        expect(firstAt(child.ShardId as string), `${child.ShardId} read before its parent ${parent} ended`).toBeGreaterThan(lastAt(parent));
      }
    }
    // Every shard held records (the split and the merge happened while records kept coming).
    for (const s of shards) expect(firstAt(s.ShardId as string), `${s.ShardId} has records`).toBeGreaterThanOrEqual(0);

    // Resuming with every position stored reads nothing again.
    const again = await readWithSource({ stream: 'reshard', endpoint: k.endpoint, pollMs: 20, maxIdleMs: 300 }, { resume: positionsOf(lines) });
    expect(again.lines).toEqual([]);

    // Resuming with only the closed parents stored: their children are read from their beginning.
    const parentsOnly = positionsOf(lines.filter((l) => /shardId-00000000000[01]$/.test(l.source)));
    const children = await readWithSource({ stream: 'reshard', endpoint: k.endpoint, pollMs: 20, maxIdleMs: 300, start: 'latest' }, { resume: parentsOnly });
    const expected = lines.filter((l) => !/shardId-00000000000[01]$/.test(l.source)).map((l) => l.event['i']);
    expect(children.lines.map((l) => l.event['i']).sort()).toEqual(expected.sort());
  });

  test('a stream that does not exist is a clear IO error', async () => {
    const run = readWithSource({ stream: 'nope', endpoint: k.endpoint, maxIdleMs: 300 });
    await expect(run).rejects.toThrow(CqpError);
    await expect(run).rejects.toThrow(`Kinesis stream "nope" not found at ${k.endpoint} (region us-east-1)`);
  });

  test('--start rejects values it does not know', async () => {
    await expect(readWithSource({ stream: 's', start: 'yesterday' })).rejects.toThrow(/start/);
  });

  test.each([
    ['trim-horizon', { type: 'trim-horizon' }],
    ['latest', { type: 'latest' }],
    ['at-timestamp:2024-05-30T08:00:00Z', { type: 'at-timestamp', timestamp: new Date('2024-05-30T08:00:00Z') }],
    ['at-timestamp:2024-05-30', { type: 'at-timestamp', timestamp: new Date('2024-05-30') }],
  ])('--start %s', (text, expected) => {
    expect(parseStart(text)).toEqual(expected);
  });

  test.each(['', 'TRIM_HORIZON', 'at-timestamp:', 'at-timestamp:soon', 'at-timestamp:May 5 2024', 'earliest'])('--start "%s" is a usage error', (text) => {
    expect(() => parseStart(text)).toThrow(/--start ".*" is not a start position; use trim-horizon, latest or at-timestamp:/);
  });
});
