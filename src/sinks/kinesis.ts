import { createHash } from 'node:crypto';
import * as z from 'zod';
import { defineSink, type SinkEvent } from '../core/component.js';
import { compileFallbackPath, compilePath, type PathGetter } from '../core/paths.js';
import type { KinesisTarget } from '../kinesis/client.js';
import type { OutgoingRecord } from '../kinesis/publisher.js';

const MAX_KEY_CHARS = 256;

const options = z.object({
  stream: z.string().min(1).describe('Kinesis stream name'),
  partitionKey: z.string().optional().describe('dot path of the partition key (default: header.rel.id, else id)'),
  endpoint: z.string().optional().describe('Kinesis endpoint URL (kinesalite, LocalStack); default: AWS'),
  region: z.string().optional().describe('AWS region (default: AWS_REGION, else us-east-1)'),
});

/** The partition key for a value found at the key path; undefined when there is none. */
function keyText(value: unknown): string | undefined {
  if (value === undefined || value === null) return undefined;
  const text = typeof value === 'string' ? value : JSON.stringify(value);
  if (text.length === 0) return undefined;
  // Kinesis takes keys of up to 256 characters; a longer one is hashed, which still maps equal keys together.
  return text.length > MAX_KEY_CHARS ? createHash('sha256').update(text).digest('hex') : text;
}

export default defineSink({
  name: 'kinesis',
  summary: 'publishes events to a Kinesis stream (PutRecords batches, order kept per partition key)',
  description:
    'Sends each event as one record (its text and a newline) with PutRecords, in batches of at most 500 ' +
    'records and 5 MiB. The partition key comes from --partition-key (a dot path; default header.rel.id, ' +
    'else id). Records Kinesis refuses are sent again with backoff, together with the later records of ' +
    'their keys, so events of one key keep their order (a retry may repeat an event: at-least-once).',
  options,
  external: true,
  examples: [
    { stream: 'ice-creams' },
    { stream: 'ice-creams', partitionKey: 'payload.productId', endpoint: 'http://127.0.0.1:4567', region: 'eu-west-1' },
  ],
  async create(o, ctx) {
    // The AWS SDK loads only when a kinesis sink starts, not with every cqp command.
    const { createKinesisClient } = await import('../kinesis/client.js');
    const { KinesisPublisher, MAX_RECORD_BYTES } = await import('../kinesis/publisher.js');
    const target: KinesisTarget = { endpoint: o.endpoint, region: o.region };
    const keyPath = o.partitionKey ?? 'header.rel.id';
    const getKey: PathGetter = o.partitionKey ? compilePath(o.partitionKey) : compileFallbackPath(['header.rel.id', 'id']);
    const client = createKinesisClient(target);
    const publisher = new KinesisPublisher({ client, stream: o.stream, target, warn: ctx.warn });
    return {
      async write(batch: SinkEvent[]): Promise<void> {
        const records: OutgoingRecord[] = [];
        for (const e of batch) {
          const key = keyText(getKey(e.event()));
          if (key === undefined) {
            ctx.policy.report(e.no, `no partition key at "${keyPath}"${o.partitionKey ? '' : ' (nor "id")'}; give --partition-key PATH`, e.text);
            continue;
          }
          const data = Buffer.from(`${e.text}\n`);
          if (data.length + Buffer.byteLength(key) > MAX_RECORD_BYTES) {
            ctx.policy.report(e.no, `event of ${data.length} bytes is larger than a Kinesis record (1 MiB)`, e.text);
            continue;
          }
          records.push({ key, data });
        }
        await publisher.publish(records);
      },
      async close(): Promise<void> {
        client.destroy();
      },
    };
  },
});
