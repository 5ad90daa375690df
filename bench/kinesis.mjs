// Kinesis read benchmark: `cqp-source kinesis` against the raw SDK GetRecords loop, both on kinesalite.
// Used by bench/run.mjs (`benchKinesis({ events })`); `node bench/kinesis.mjs [events]` runs it alone.
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  CreateStreamCommand,
  DescribeStreamSummaryCommand,
  GetRecordsCommand,
  GetShardIteratorCommand,
  KinesisClient,
  ListShardsCommand,
  PutRecordsCommand,
} from '@aws-sdk/client-kinesis';
import { NodeHttpHandler } from '@smithy/node-http-handler';

const require = createRequire(import.meta.url);
const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..');
const STREAM = 'bench';
const SHARDS = 4;
// The CLI waits this long at the tip before it ends; it is not reading time, so it is taken off its clock.
const MAX_IDLE_MS = 500;

const awsEnv = {
  AWS_ACCESS_KEY_ID: 'AKIDBENCHBENCH',
  AWS_SECRET_ACCESS_KEY: 'bench-secret',
  AWS_REGION: 'us-east-1',
  AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
};

function client(endpoint) {
  return new KinesisClient({ region: 'us-east-1', endpoint, requestHandler: new NodeHttpHandler() });
}

/** A seed-shaped ice-cream event of about 400 bytes. */
function seedEvent(i) {
  const id = `205bdec2-${String(i % 1000).padStart(4, '0')}-4c1e-9f3a-7e2b5d8c${String(i % 9973).padStart(4, '0')}`;
  return JSON.stringify({
    header: {
      eventId: `events/4f1c${String(i).padStart(8, '0')}-1a2b-4c3d-8e9f-0a1b2c3d4e5f`,
      eventType: ['update'],
      eventName: ['update.ice_cream'],
      createdTimestamp: new Date(1653900586745 + i * 1000).toISOString(),
      rel: { id, schemaVersion: '/schemas/ice_cream/messages/update/0.0.1' },
    },
    payload: { name: 'Vanilla Toffee Bar Crunch', productId: String(600 + (i % 97)), price: 4.99, qty: (i % 5) + 1, flavour: 'vanilla' },
  });
}

async function seed(endpoint, events) {
  const c = client(endpoint);
  await c.send(new CreateStreamCommand({ StreamName: STREAM, ShardCount: SHARDS }));
  for (;;) {
    const out = await c.send(new DescribeStreamSummaryCommand({ StreamName: STREAM }));
    if (out.StreamDescriptionSummary?.StreamStatus === 'ACTIVE') break;
    await new Promise((r) => setTimeout(r, 10));
  }
  for (let i = 0; i < events; i += 500) {
    const records = [];
    for (let j = i; j < Math.min(events, i + 500); j++) {
      const text = seedEvent(j);
      records.push({ PartitionKey: String(j % 1000), Data: Buffer.from(`${text}\n`) });
    }
    await c.send(new PutRecordsCommand({ StreamName: STREAM, Records: records }));
  }
  c.destroy();
}

/** The baseline: every shard read to its tip with plain GetRecords calls, counting lines. Runs in a child process. */
async function rawRead(endpoint) {
  const c = client(endpoint);
  const shards = (await c.send(new ListShardsCommand({ StreamName: STREAM }))).Shards ?? [];
  const counts = await Promise.all(
    shards.map(async (s) => {
      let n = 0;
      let it = (await c.send(new GetShardIteratorCommand({ StreamName: STREAM, ShardId: s.ShardId, ShardIteratorType: 'TRIM_HORIZON' }))).ShardIterator;
      while (it) {
        const out = await c.send(new GetRecordsCommand({ ShardIterator: it, Limit: 10000 }));
        const records = out.Records ?? [];
        if (records.length === 0) break;
        for (const r of records) {
          const text = Buffer.from(r.Data).toString('utf8');
          for (const line of text.split('\n')) if (line.length > 0) n++;
        }
        it = out.NextShardIterator;
      }
      return n;
    }),
  );
  c.destroy();
  return counts.reduce((a, b) => a + b, 0);
}

/** Runs a shell command without blocking this process (kinesalite answers from here); returns stdout and seconds. */
function timed(command) {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const child = spawn('sh', ['-c', command], { cwd: root, env: { ...process.env, ...awsEnv }, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.on('error', reject);
    child.on('close', (code) => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      if (code !== 0) reject(new Error(`${command} exited ${code}`));
      else resolve({ out: out.trim(), seconds });
    });
  });
}

/** Starts kinesalite, puts `events` seed-like events, and measures cqp-source kinesis against the raw SDK loop. */
export async function benchKinesis({ events = 100_000 } = {}) {
  Object.assign(process.env, awsEnv);
  const kinesalite = require('kinesalite');
  const server = kinesalite({ createStreamMs: 0, deleteStreamMs: 0, updateStreamMs: 0, shardLimit: 100 });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const endpoint = `http://127.0.0.1:${server.address().port}`;
  try {
    await seed(endpoint, events);
    const raw = await timed(`node ${JSON.stringify(fileURLToPath(import.meta.url))} --raw-read ${endpoint}`);
    const cli = await timed(
      `node bin/cqp-source.js kinesis --stream ${STREAM} --endpoint ${endpoint} --poll-ms 50 --max-idle-ms ${MAX_IDLE_MS} | wc -l`,
    );
    const rawCount = Number(raw.out);
    const cliCount = Number(cli.out);
    if (rawCount !== events || cliCount !== events) {
      throw new Error(`kinesis bench read ${cliCount} events with cqp and ${rawCount} with the SDK loop; ${events} were put`);
    }
    const baselineEventsPerSec = Math.round(events / raw.seconds);
    const eventsPerSec = Math.round(events / Math.max(0.001, cli.seconds - MAX_IDLE_MS / 1000));
    return [
      {
        what: `cqp-source kinesis, ${events} events, ${SHARDS} shards (kinesalite; baseline: raw SDK GetRecords loop)`,
        eventsPerSec,
        baselineEventsPerSec,
        ratio: Math.round((eventsPerSec / baselineEventsPerSec) * 100) / 100,
      },
    ];
  } finally {
    await new Promise((resolve) => server.close(resolve));
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  if (process.argv[2] === '--raw-read') {
    Object.assign(process.env, awsEnv);
    process.stdout.write(`${await rawRead(process.argv[3])}\n`);
  } else {
    console.table(await benchKinesis({ events: Number(process.argv[2] ?? 100_000) }));
  }
}
