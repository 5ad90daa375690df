import * as z from 'zod';
import { defineSink } from '../core/component.js';
import { openCommandLog } from '../log/command-log.js';

export default defineSink({
  name: 'log',
  summary: 'append events to the command log (durable, exactly once)',
  description:
    'Appends each event as a record with a sequence number, append time and checksum. A batch is ' +
    'durable before it is acknowledged (--fsync batch: one fsync per batch). The log stores the last ' +
    'position per source with the events, so a restarted pipeline never appends an event twice. ' +
    'One writer at a time: a second writer on the same log fails at once. The log is a file, or a ' +
    'NATS JetStream stream given as nats://HOST:PORT/STREAM (created when missing; a batch is ' +
    'acknowledged once the server has stored it).',
  options: z.object({
    path: z
      .string()
      .min(1)
      .describe('the command log: a file (created if missing), e.g. data/events.log, or a JetStream stream, nats://HOST:PORT/STREAM'),
    fsync: z
      .enum(['always', 'batch', 'never'])
      .default('batch')
      .describe('when appends reach the disk: always (each event), batch (one fsync per batch), never (leave it to the OS)'),
    partitions: z
      .number()
      .int()
      .min(1)
      .max(1024)
      .optional()
      .describe('a JetStream log created by this sink spreads its events over N subjects by entity key (default 1)'),
  }),
  store: {
    option: 'path',
    locked: true,
    commandLog: true,
    async positions({ path }) {
      const log = await openCommandLog(path);
      try {
        return (await log.exists()) ? (await log.tail()).positions : {};
      } finally {
        await log.close();
      }
    },
    // The index beside the log names the log's id: the old one is ignored by the new log, and replaced with it.
    rebuild: { companions: ['.idx'] },
  },
  // The log stores each event's bytes as they came.
  plainNumbers: true,
  examples: [{ path: 'data/events.log' }, { path: 'data/events.log', fsync: 'always' }, { path: 'nats://127.0.0.1:4222/events', partitions: 4 }],
  async create({ path, fsync, partitions }, ctx) {
    const log = await openCommandLog(path, ctx.cwd);
    // The writer holds the log (and its own connection to a server) until it is closed.
    const writer = await log.openWriter({ fsync, warn: ctx.warn, partitions }).finally(() => log.close());
    return {
      applied: () => writer.applied(),
      async write(batch) {
        await writer.appendBatch(batch.map((e) => ({ bytes: e.text, position: e.position })));
      },
      close: () => writer.close(),
    };
  },
});
