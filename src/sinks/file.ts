import { mkdir, open, type FileHandle } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import * as z from 'zod';
import { defineSink } from '../core/component.js';
import { CqpError, messageOf } from '../core/errors.js';

export default defineSink({
  name: 'file',
  summary: 'append events to a file as NDJSON (at-least-once: a restart may repeat a few)',
  description:
    'Appends each batch with one write; --fsync batch (or always) makes each batch durable before the next is read. The file ' +
    'keeps no positions, so after a crash `cqp run` may append events again that were already written; ' +
    'use the log or sqlite sinks where exactly-once matters.',
  options: z.object({
    path: z.string().min(1).describe('the file to append to (created, with its folder, when missing)'),
    // Spelled as on the log sink. A batch is one write here, so `always` and `batch` both sync once per batch.
    fsync: z
      .enum(['always', 'batch', 'never'])
      .default('never')
      .describe('when appends reach the disk: always or batch (one fsync per batch, before the next is read), never (leave it to the OS)'),
  }),
  // No positions: at-least-once. A replay that wrote nothing leaves the file empty, as the sink would.
  store: { option: 'path', rebuild: { emptyWhenUnwritten: true } },
  examples: [{ path: 'data/deletes.ndjson' }],
  async create({ path, fsync }, ctx) {
    const file = resolve(ctx.cwd, path);
    let handle: FileHandle;
    try {
      await mkdir(dirname(file), { recursive: true });
      handle = await open(file, 'a');
    } catch (error) {
      throw new CqpError('IO', `--path ${path}: cannot open it for appending (${messageOf(error)})`);
    }
    return {
      async write(batch) {
        let text = '';
        for (const e of batch) text += `${e.text}\n`;
        await handle.write(text);
        if (fsync !== 'never') await handle.sync();
      },
      async close() {
        await handle.close();
      },
    };
  },
});
