import * as z from 'zod';
import { defineSource } from '../core/component.js';
import { stampJson, stampLine } from '../core/position.js';
import { resolveLogLocation } from '../log/command-log.js';
import { logEventReader } from '../log/input.js';

export default defineSource({
  name: 'log',
  summary: 'read events from the command log, optionally following new appends',
  description:
    'Emits the events stored in a command log, in sequence order, each stamped with its position ' +
    '(log:<logId>:<seq>) so that a restarted pipeline resumes right after the last event it applied. ' +
    'POS is a sequence number or an ISO-8601 append time; both bounds are inclusive.',
  options: z.object({
    path: z.string().min(1).describe('the command log: a file, e.g. data/events.log, or a JetStream stream, nats://HOST:PORT/STREAM'),
    from: z.string().optional().describe('first event to read: a sequence number (1200) or an ISO-8601 append time'),
    until: z.string().optional().describe('last event to read: a sequence number or an ISO-8601 append time'),
    follow: z.boolean().default(false).describe('keep reading as new events are appended (like tail -f), until stopped'),
  }),
  resumable: true,
  examples: [
    { path: 'data/events.log' },
    { path: 'data/events.log', from: '1000', until: '2000' },
    { path: 'data/events.log', from: '2024-05-30T08:00:00Z', follow: true },
  ],
  create({ path, from, until, follow }, ctx) {
    const read = logEventReader(resolveLogLocation(path, ctx.cwd), { from, until, follow });
    return {
      async *batches() {
        for await (const events of read(ctx.resume, ctx.signal)) {
          const lines: string[] = new Array<string>(events.length);
          for (let i = 0; i < events.length; i++) {
            const { text, position } = events[i] as (typeof events)[number];
            lines[i] = text.charCodeAt(text.length - 1) === 125 ? stampJson(text, position) : stampLine(text, position);
          }
          yield { lines };
        }
      },
    };
  },
});
