// The JetStream baseline: stdin's lines published to a stream with the same client cqp uses, the
// acknowledgements awaited per 1,000-line batch. Usage: plain-nats.mjs SERVERS STREAM (the stream is created).
import { createInterface } from 'node:readline';
import { connect } from '@nats-io/transport-node';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';

const [servers, stream] = process.argv.slice(2);
const nc = await connect({ servers });
const jsm = await jetstreamManager(nc);
await jsm.streams.add({ name: stream, subjects: [`plain.${stream}.*`], storage: 'file', retention: 'limits' });
const js = jetstream(nc);
const subject = `plain.${stream}.0`;
let batch = [];
for await (const line of createInterface({ input: process.stdin, crlfDelay: Infinity })) {
  batch.push(js.publish(subject, line));
  if (batch.length === 1000) {
    await Promise.all(batch);
    batch = [];
  }
}
await Promise.all(batch);
await nc.close();
