import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { z } from 'zod';
import { defineSink } from '../core/component.js';
import { openLogWriter } from '../log/writer.js';

export default defineSink({
  name: 'log',
  summary: 'append events to the command log (durable, exactly once)',
  description:
    'Appends each event as a record with a sequence number, append time and checksum. A batch is ' +
    'durable before it is acknowledged (--fsync batch: one fsync per batch). The log stores the last ' +
    'position per source with the events, so a restarted pipeline never appends an event twice. ' +
    'One writer at a time: a second writer on the same log fails at once.',
  options: z.object({
    path: z.string().min(1).describe('the command log file (created if missing), e.g. data/events.log'),
    fsync: z
      .enum(['always', 'batch', 'never'])
      .default('batch')
      .describe('when appends reach the disk: always (each event), batch (one fsync per batch), never (leave it to the OS)'),
  }),
  store: {
    option: 'path',
    locked: true,
    commandLog: true,
    async positions({ path }) {
      const { readLogApplied } = await import('../log/reader.js');
      return existsSync(path) ? readLogApplied(path) : {};
    },
    // The index beside the log names the log's id: the old one is ignored by the new log, and replaced with it.
    rebuild: { companions: ['.idx'] },
  },
  // The log stores each event's bytes as they came.
  plainNumbers: true,
  examples: [{ path: 'data/events.log' }, { path: 'data/events.log', fsync: 'always' }],
  async create({ path, fsync }, ctx) {
    const writer = await openLogWriter(resolve(ctx.cwd, path), { fsync, warn: ctx.warn });
    return {
      applied: () => writer.applied(),
      async write(batch) {
        await writer.appendBatch(batch.map((e) => ({ bytes: e.text, position: e.position })));
      },
      close: () => writer.close(),
    };
  },
});
