import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { splitStamp } from '../../src/core/position.js';
import { findComponent } from '../../src/core/registry.js';
import { createStream, type Kinesalite, putRecords, startKinesalite } from '../helpers/kinesalite.js';

const root = join(fileURLToPath(import.meta.url), '..', '..', '..');
const bin = (name: string): string => join(root, 'bin', name);

let k: Kinesalite;
beforeAll(async () => {
  k = await startKinesalite();
});
afterAll(async () => {
  await k?.close();
});

function seedLines(from: number, to: number): string[] {
  const out: string[] = [];
  for (let i = from; i < to; i++) {
    out.push(JSON.stringify({ header: { eventId: `events/${i}`, rel: { id: `ice-${i % 30}` } }, payload: { i } }));
  }
  return out;
}

const iOf = (line: string): number => (JSON.parse(splitStamp(line).text) as { payload: { i: number } }).payload.i;

describe('cqp-source kinesis / cqp-sink kinesis as commands', () => {
  test('both components are in the static registry', () => {
    expect(findComponent('source', 'kinesis'), 'import src/sources/kinesis.ts in src/components.ts').toBeDefined();
    expect(findComponent('sink', 'kinesis'), 'import src/sinks/kinesis.ts in src/components.ts').toBeDefined();
  });

  test('cqp-sink kinesis publishes stdin; cqp-source kinesis prints every event stamped with its shard and sequence number', async () => {
    await createStream(k.client, 'cli', 3);
    const input = seedLines(0, 5000);
    const sink = await execa('node', [bin('cqp-sink.js'), 'kinesis', '--stream', 'cli', '--endpoint', k.endpoint], {
      input: `${input.join('\n')}\n`,
      reject: false,
    });
    expect(sink.stderr).toBe('');
    expect(sink.exitCode).toBe(0);

    const source = await execa('node', [bin('cqp-source.js'), 'kinesis', '--stream', 'cli', '--endpoint', k.endpoint, '--poll-ms', '20', '--max-idle-ms', '400'], {
      reject: false,
    });
    expect(source.stderr).toBe('');
    expect(source.exitCode).toBe(0);
    const lines = source.stdout.split('\n');
    expect(lines).toHaveLength(5000);
    expect(lines[0]).toMatch(/,"@cqp":"kinesis:cli\/shardId-00000000000[0-2]:\d+"}$/);
    expect(lines.map(iOf).sort((a, b) => a - b)).toEqual(input.map((_, i) => i));

    // Resuming after what a sink stored prints only the records after it.
    const last: Record<string, string> = {};
    for (const line of lines.slice(0, 2000)) {
      const p = splitStamp(line).position;
      if (p) last[p.source] = p.n;
    }
    await putRecords(k.client, 'cli', seedLines(5000, 5100).map((data, j) => ({ key: `ice-${j % 30}`, data })));
    const resumed = await execa(
      'node',
      [bin('cqp-source.js'), 'kinesis', '--stream', 'cli', '--endpoint', k.endpoint, '--poll-ms', '20', '--max-idle-ms', '400', '--resume', JSON.stringify(last)],
      { reject: false },
    );
    expect(resumed.exitCode).toBe(0);
    const again = resumed.stdout.split('\n').map(iOf);
    const before = new Set(lines.slice(0, 2000).map(iOf));
    expect(again.filter((i) => before.has(i))).toEqual([]);
    expect(new Set([...before, ...again]).size).toBe(5100);
  });

  test('SIGTERM stops a running source with exit 0', async () => {
    await createStream(k.client, 'cli-term', 1);
    await putRecords(k.client, 'cli-term', seedLines(0, 100).map((data) => ({ key: 'a', data })));
    const child = execa('node', [bin('cqp-source.js'), 'kinesis', '--stream', 'cli-term', '--endpoint', k.endpoint, '--poll-ms', '20'], { reject: false });
    let seen = '';
    await new Promise<void>((resolve) => {
      child.stdout?.on('data', (d: Buffer) => {
        seen += d.toString();
        if (seen.split('\n').length > 100) resolve();
      });
    });
    child.kill('SIGTERM');
    const done = await child;
    expect(done.exitCode).toBe(0);
    expect(done.stdout.split('\n')).toHaveLength(100);
  });

  test('a missing stream exits 1 naming the stream, endpoint and region; a bad --start exits 2', async () => {
    const missing = await execa('node', [bin('cqp-source.js'), 'kinesis', '--stream', 'nowhere', '--endpoint', k.endpoint, '--region', 'eu-west-1'], {
      reject: false,
    });
    expect(missing.exitCode).toBe(1);
    expect(missing.stderr).toContain(`Kinesis stream "nowhere" not found at ${k.endpoint} (region eu-west-1)`);

    const sink = await execa('node', [bin('cqp-sink.js'), 'kinesis', '--stream', 'nowhere', '--endpoint', k.endpoint], { input: '{"id":"a"}\n', reject: false });
    expect(sink.exitCode).toBe(1);
    expect(sink.stderr).toContain('Kinesis stream "nowhere" not found');

    const bad = await execa('node', [bin('cqp-source.js'), 'kinesis', '--stream', 'x', '--start', 'yesterday'], { reject: false });
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr).toMatch(/--start/);
  });
});
