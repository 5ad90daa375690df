import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { ListShardsCommand, MergeShardsCommand, SplitShardCommand } from '@aws-sdk/client-kinesis';
import { createKinesisClient } from '../../src/kinesis/client.js';
import { type KinesisRecord, readShards, type ShardReaderOptions } from '../../src/kinesis/reader.js';
import { createStream, type Fault, type Kinesalite, putRecords, startKinesalite, waitActive } from '../helpers/kinesalite.js';

let k: Kinesalite;
/** Faults to inject next, per operation, consumed one per call. */
const planned = new Map<string, Array<Fault | undefined>>();
beforeAll(async () => {
  k = await startKinesalite({ faults: (op) => planned.get(op)?.shift() });
});
afterAll(async () => {
  await k?.close();
});

function records(from: number, to: number, keys: number): Array<{ key: string; data: string }> {
  const out: Array<{ key: string; data: string }> = [];
  for (let i = from; i < to; i++) out.push({ key: `k${i % keys}`, data: JSON.stringify({ k: `k${i % keys}`, i }) });
  return out;
}

async function readAll(options: Omit<ShardReaderOptions, 'client' | 'target'>, onBatch?: (batch: KinesisRecord[]) => Promise<void>): Promise<KinesisRecord[]> {
  // One SDK attempt per call, so the reader's own retry loop meets every injected fault.
  const client = createKinesisClient({ endpoint: k.endpoint, maxAttempts: 1 });
  const out: KinesisRecord[] = [];
  try {
    for await (const batch of readShards({ client, target: { endpoint: k.endpoint }, pollMs: 10, maxIdleMs: 300, ...options })) {
      out.push(...batch);
      await onBatch?.(batch);
    }
  } finally {
    client.destroy();
  }
  return out;
}

function eventsOf(rs: readonly KinesisRecord[]): Array<{ k: string; i: number }> {
  return rs.map((r) => JSON.parse(r.data.toString('utf8')) as { k: string; i: number });
}

function expectEachOnceInKeyOrder(rs: readonly KinesisRecord[], total: number): void {
  const events = eventsOf(rs);
  expect(new Set(events.map((e) => e.i)).size).toBe(events.length);
  expect(events.length).toBe(total);
  const last = new Map<string, number>();
  for (const e of events) {
    expect(e.i, `key ${e.k}`).toBeGreaterThan(last.get(e.k) ?? -1);
    last.set(e.k, e.i);
  }
}

describe('readShards', () => {
  test('throttling and an expired iterator: retried, nothing lost or repeated', async () => {
    await createStream(k.client, 'faulty', 2);
    await putRecords(k.client, 'faulty', records(0, 2000, 20));
    const throttle: Fault = { error: 'ProvisionedThroughputExceededException', message: 'Rate exceeded for shard' };
    const iterBefore = k.calls.get('GetShardIterator') ?? 0;
    planned.set('ListShards', [{ error: 'LimitExceededException' }]);
    planned.set('GetShardIterator', [throttle]);
    // Calls 1-3 throttled, the 4th and 6th find their iterator expired.
    planned.set('GetRecords', [throttle, throttle, throttle, undefined, { error: 'ExpiredIteratorException', message: 'Iterator expired' }, undefined, { error: 'ExpiredIteratorException' }]);
    const got = await readAll({ stream: 'faulty', start: { type: 'trim-horizon' }, limit: 100 });
    expectEachOnceInKeyOrder(got, 2000);
    expect(planned.get('GetRecords')).toEqual([]);
    // Two shards, one throttled GetShardIterator retried, two expired iterators fetched again.
    expect((k.calls.get('GetShardIterator') ?? 0) - iterBefore).toBe(5);
  });

  test('an error that retrying cannot cure ends the reading with the call and the stream named', async () => {
    await createStream(k.client, 'denied', 1);
    planned.set('GetRecords', [{ error: 'AccessDeniedException', message: 'not allowed to read' }]);
    await expect(readAll({ stream: 'denied', start: { type: 'trim-horizon' } })).rejects.toThrow(
      /Kinesis GetRecords \(shardId-000000000000\) on stream "denied" at http:\/\/127\.0\.0\.1:\d+ \(region us-east-1\) failed: AccessDeniedException: not allowed to read/,
    );
    planned.clear();
  });

  test('children start only after their parents are read to the end, even when listed early', async () => {
    await createStream(k.client, 'tree', 2);
    await putRecords(k.client, 'tree', records(0, 1000, 30));
    const shards = (await k.client.send(new ListShardsCommand({ StreamName: 'tree' }))).Shards ?? [];
    const lo = BigInt(shards[0]?.HashKeyRange?.StartingHashKey ?? '0');
    const hi = BigInt(shards[0]?.HashKeyRange?.EndingHashKey ?? '0');
    await k.client.send(new SplitShardCommand({ StreamName: 'tree', ShardToSplit: 'shardId-000000000000', NewStartingHashKey: String((lo + hi) / 2n) }));
    await waitActive(k.client, 'tree');
    await putRecords(k.client, 'tree', records(1000, 2000, 30));
    await k.client.send(new MergeShardsCommand({ StreamName: 'tree', ShardToMerge: 'shardId-000000000003', AdjacentShardToMerge: 'shardId-000000000001' }));
    await waitActive(k.client, 'tree');
    await putRecords(k.client, 'tree', records(2000, 3000, 30));
    // Small reads and a slow consumer: parents take many batches while their children are already listed.
    const got = await readAll({ stream: 'tree', start: { type: 'trim-horizon' }, limit: 50, bufferBatches: 1, listShardsMs: 20 }, () => new Promise((r) => setTimeout(r, 1)));
    expectEachOnceInKeyOrder(got, 3000);
    const firstAt = (id: string): number => got.findIndex((r) => r.shardId === id);
    const lastAt = (id: string): number => got.findLastIndex((r) => r.shardId === id);
    const tree: Array<[string, string]> = [
      ['shardId-000000000000', 'shardId-000000000002'],
      ['shardId-000000000000', 'shardId-000000000003'],
      ['shardId-000000000003', 'shardId-000000000004'],
      ['shardId-000000000001', 'shardId-000000000004'],
    ];
    for (const [parent, child] of tree) {
      expect(firstAt(child), `${child} after ${parent}`).toBeGreaterThan(lastAt(parent));
    }
  });

  test('stops when the signal aborts, without waiting for the stream to go idle', async () => {
    await createStream(k.client, 'endless', 1);
    await putRecords(k.client, 'endless', records(0, 10, 2));
    const controller = new AbortController();
    const client = createKinesisClient({ endpoint: k.endpoint });
    const got: KinesisRecord[] = [];
    setTimeout(() => controller.abort(), 200);
    for await (const batch of readShards({ client, target: {}, stream: 'endless', start: { type: 'trim-horizon' }, pollMs: 10, signal: controller.signal })) {
      got.push(...batch);
    }
    client.destroy();
    expect(got).toHaveLength(10);
  });
});
