import { resolve } from 'node:path';
import { z } from 'zod';
import { defineSource } from '../core/component.js';
import { resumeAt, stampJson, stampLine } from '../core/position.js';
import { parseLogPos, type LogPos } from '../log/format.js';
import { readLog, readLogId, waitForLog } from '../log/reader.js';

export default defineSource({
  name: 'log',
  summary: 'read events from the command log, optionally following new appends',
  description:
    'Emits the events stored in a command log, in sequence order, each stamped with its position ' +
    '(log:<logId>:<seq>) so that a restarted pipeline resumes right after the last event it applied. ' +
    'POS is a sequence number or an ISO-8601 append time; both bounds are inclusive.',
  options: z.object({
    path: z.string().min(1).describe('the command log file, e.g. data/events.log'),
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
    const file = resolve(ctx.cwd, path);
    const start: LogPos | undefined = from === undefined ? undefined : parseLogPos(from, '--from');
    const end = until === undefined ? undefined : parseLogPos(until, '--until');
    return {
      async *batches() {
        if (follow && !(await waitForLog(file, ctx.signal))) return;
        const source = `log:${await readLogId(file)}`;
        const done = ctx.resume[source];
        let readFrom = start;
        let minTime: number | undefined;
        if (done !== undefined) {
          // Resume right after what was applied (at it, when only part of its outputs were), or later
          // still when --from says so.
          const at = resumeAt(done);
          const next = Number(at.n) + (at.inclusive ? 0 : 1);
          if (!start || 'seq' in start) readFrom = { seq: Math.max(next, start?.seq ?? 0) };
          else {
            readFrom = { seq: next };
            minTime = start.time;
          }
        }
        for await (const records of readLog(file, { from: readFrom, until: end, follow, signal: ctx.signal })) {
          const lines: string[] = [];
          for (const r of records) {
            if (minTime !== undefined) {
              if (r.time < minTime) continue;
              minTime = undefined;
            }
            const text = r.bytes.toString('utf8');
            const p = { source, n: String(r.seq) };
            lines.push(text.charCodeAt(text.length - 1) === 125 ? stampJson(text, p) : stampLine(text, p));
          }
          if (lines.length > 0) yield { lines };
        }
      },
    };
  },
});
