import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { SinkEvent } from '../../src/core/component.js';
import { createPolicy, type ErrorMode } from '../../src/core/policy.js';
import { MAX_BATCH_BYTES, type OutgoingRecord, planBatches, recordsToResend } from '../../src/kinesis/publisher.js';
import kinesisSink from '../../src/sinks/kinesis.js';
import { createStream, type Fault, type Kinesalite, readWithSource, type ReadLine, startKinesalite } from '../helpers/kinesalite.js';

let k: Kinesalite;
let faulty: Kinesalite;
const planned = new Map<string, Array<Fault | undefined>>();
beforeAll(async () => {
  [k, faulty] = await Promise.all([startKinesalite(), startKinesalite({ faults: (op) => planned.get(op)?.shift() })]);
});
afterAll(async () => {
  await Promise.all([k?.close(), faulty?.close()]);
});

/** A seed-shaped event of entity `key`, numbered `i`. */
function seedEvent(i: number, key: string, extra = ''): string {
  return JSON.stringify({
    header: {
      eventId: `events/${i}`,
      eventType: ['update'],
      eventName: ['update.ice_cream'],
      createdTimestamp: '2022-05-30T08:49:46.745Z',
      rel: { id: key, schemaVersion: '/schemas/ice_cream/messages/update/0.0.1' },
    },
    payload: { name: 'Vanilla Toffee Bar Crunch', productId: `p${i % 13}`, i, extra },
  });
}

/** Writes event texts through the kinesis sink in batches, as the runtime would. */
async function writeWithSink(options: Record<string, unknown>, texts: readonly string[], mode: ErrorMode = 'fail', batchSize = 4096): Promise<string[]> {
  const warnings: string[] = [];
  const warn = (m: string): void => void warnings.push(m);
  const sink = await kinesisSink.create(kinesisSink.options.parse(options), {
    policy: createPolicy({ mode, warn }),
    warn,
    signal: new AbortController().signal,
    cwd: process.cwd(),
  });
  try {
    for (let at = 0; at < texts.length; at += batchSize) {
      const batch: SinkEvent[] = texts.slice(at, at + batchSize).map((text, j) => ({
        text,
        no: at + j + 1,
        position: undefined,
        event: () => JSON.parse(text) as Record<string, unknown>,
      }));
      await sink.write(batch);
    }
  } finally {
    await sink.close();
  }
  return warnings;
}

const keyOf = (l: ReadLine): string => (l.event['header'] as { rel: { id: string } }).rel.id;
const iOf = (l: ReadLine): number => (l.event['payload'] as { i: number }).i;

describe('cqp-sink kinesis', () => {
  test('sink → source round trip of 50k events: lossless, no repeats, order kept per key', async () => {
    await createStream(k.client, 'trip', 4);
    const texts = Array.from({ length: 50_000 }, (_, i) => seedEvent(i, `ice-${i % 500}`));
    await writeWithSink({ stream: 'trip', endpoint: k.endpoint }, texts);
    const { lines } = await readWithSource({ stream: 'trip', endpoint: k.endpoint, pollMs: 20, maxIdleMs: 300 });
    expect(lines).toHaveLength(50_000);
    const last = new Map<string, number>();
    const seen = new Set<number>();
    for (const l of lines) {
      const i = iOf(l);
      expect(seen.has(i)).toBe(false);
      seen.add(i);
      expect(i).toBeGreaterThan(last.get(keyOf(l)) ?? -1);
      last.set(keyOf(l), i);
    }
    // The event's text comes back byte for byte.
    const byI = new Map(lines.map((l) => [iOf(l), l.event]));
    expect(JSON.stringify(byI.get(4242))).toBe(texts[4242]);
  }, 180_000); // 50k events into kinesalite and back: over a minute on a loaded machine

  test('--partition-key picks the key path: events of one key land on one shard', async () => {
    await createStream(k.client, 'by-product', 4);
    const texts = Array.from({ length: 2000 }, (_, i) => seedEvent(i, `ice-${i}`));
    await writeWithSink({ stream: 'by-product', endpoint: k.endpoint, partitionKey: 'payload.productId' }, texts);
    const { lines } = await readWithSource({ stream: 'by-product', endpoint: k.endpoint, pollMs: 20, maxIdleMs: 300 });
    expect(lines).toHaveLength(2000);
    const shardOf = new Map<string, Set<string>>();
    for (const l of lines) {
      const key = (l.event['payload'] as { productId: string }).productId;
      shardOf.set(key, (shardOf.get(key) ?? new Set()).add(l.source));
    }
    expect(shardOf.size).toBe(13);
    for (const shards of shardOf.values()) expect(shards.size).toBe(1);
    expect(new Set(lines.map((l) => l.source)).size).toBeGreaterThan(1);
  });

  test('an event without a partition key follows the error policy; the default falls back to id', async () => {
    await createStream(k.client, 'nokey', 1);
    const texts = ['{"id":"a","n":1}', '{"name":"no key here"}', seedEvent(3, 'ice-3')];
    const warnings = await writeWithSink({ stream: 'nokey', endpoint: k.endpoint }, texts, 'skip');
    expect(warnings.join('\n')).toMatch(/:2: no partition key at "header\.rel\.id" \(nor "id"\); give --partition-key PATH/);
    const { lines } = await readWithSource({ stream: 'nokey', endpoint: k.endpoint, pollMs: 20, maxIdleMs: 300 });
    expect(lines.map((l) => JSON.stringify(l.event))).toEqual([texts[0], texts[2]]);
    await expect(writeWithSink({ stream: 'nokey', endpoint: k.endpoint, partitionKey: 'payload.nope' }, texts, 'fail')).rejects.toThrow(
      /stdin:1: no partition key at "payload\.nope"/,
    );
  });

  test('refused records are sent again with the later records of their keys; every event arrives, the last copy of each in key order', async () => {
    await createStream(faulty.client, 'refused', 2);
    const texts = Array.from({ length: 3000 }, (_, i) => seedEvent(i, `ice-${i % 40}`));
    // The first call is throttled whole; later calls lose some records, like a shard over its limit.
    planned.set('PutRecords', [
      { error: 'ProvisionedThroughputExceededException' },
      { failRecords: [3, 4, 10, 11, 12, 200, 499] },
      undefined,
      { failRecords: [0, 1, 2, 50] },
      { failRecords: [7] },
    ]);
    await writeWithSink({ stream: 'refused', endpoint: faulty.endpoint }, texts, 'fail', 1000);
    expect(planned.get('PutRecords')).toEqual([]);
    const { lines } = await readWithSource({ stream: 'refused', endpoint: faulty.endpoint, pollMs: 20, maxIdleMs: 300 });
    expect(new Set(lines.map(iOf)).size).toBe(3000);
    // A record's key keeps its order when, for each event, only its last copy counts.
    const lastCopy = new Map<number, number>();
    lines.forEach((l, at) => lastCopy.set(iOf(l), at));
    const byKey = new Map<string, number[]>();
    for (const [i] of [...lastCopy].sort((a, b) => a[1] - b[1])) {
      const key = `ice-${i % 40}`;
      byKey.set(key, [...(byKey.get(key) ?? []), i]);
    }
    for (const [key, is] of byKey) expect(is, key).toEqual([...is].sort((a, b) => a - b));
    // Repeats are only of records sent again after a refused one of their key.
    expect(lines.length).toBeGreaterThan(3000);
  });

  test('large events are cut into PutRecords calls of at most 5 MiB', async () => {
    await createStream(k.client, 'large', 2);
    const texts = Array.from({ length: 300 }, (_, i) => seedEvent(i, `ice-${i % 7}`, 'x'.repeat(40_000)));
    const before = k.calls.get('PutRecords') ?? 0;
    await writeWithSink({ stream: 'large', endpoint: k.endpoint }, texts);
    expect((k.calls.get('PutRecords') ?? 0) - before).toBe(3);
    const { lines } = await readWithSource({ stream: 'large', endpoint: k.endpoint, pollMs: 20, maxIdleMs: 300 });
    expect(lines.map(iOf).sort((a, b) => a - b)).toEqual(texts.map((_, i) => i));
  });

  test('a stream that does not exist is a clear IO error', async () => {
    await expect(writeWithSink({ stream: 'missing', endpoint: k.endpoint }, [seedEvent(1, 'a')])).rejects.toThrow(
      `Kinesis stream "missing" not found at ${k.endpoint} (region us-east-1)`,
    );
  });
});

describe('PutRecords batching and resending', () => {
  const rec = (key: string, bytes = 10): OutgoingRecord => ({ key, data: Buffer.alloc(bytes) });

  test.each([
    { name: '1200 small records → 500, 500, 200', records: Array.from({ length: 1200 }, () => rec('a')), sizes: [500, 500, 200] },
    { name: '6 records of 1 MiB − 1 → 5 and 1', records: Array.from({ length: 6 }, () => rec('a', 1024 * 1024 - 2)), sizes: [5, 1] },
    { name: 'no records → no calls', records: [], sizes: [] },
  ])('$name', ({ records, sizes }) => {
    const batches = planBatches(records);
    expect(batches.map((b) => b.length)).toEqual(sizes);
    for (const b of batches) expect(b.reduce((n, r) => n + r.data.length + r.key.length, 0)).toBeLessThanOrEqual(MAX_BATCH_BYTES);
  });

  test.each([
    { sent: 'a b c a b', failed: [1], again: 'b b' },
    { sent: 'a b c a b', failed: [0], again: 'a a' },
    { sent: 'a b c a b c', failed: [0, 2], again: 'a c a c' },
    { sent: 'a b c', failed: [], again: '' },
    { sent: 'a a a', failed: [2], again: 'a' },
  ])('resend of "$sent" with $failed refused is "$again"', ({ sent, failed, again }) => {
    const records = sent.split(' ').map((key) => rec(key));
    const out = recordsToResend(records, (i) => failed.includes(i));
    expect(out.map((r) => r.key).join(' ')).toBe(again);
    // The resent records are the very records, in their order.
    for (let j = 1; j < out.length; j++) expect(records.indexOf(out[j] as OutgoingRecord)).toBeGreaterThan(records.indexOf(out[j - 1] as OutgoingRecord));
  });
});
