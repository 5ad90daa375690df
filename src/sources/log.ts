import * as z from 'zod';
import { defineSource, type SourceInstance, type StageContext } from '../core/component.js';
import { CqpError } from '../core/errors.js';
import { stampJson, stampLine, type PositionMap } from '../core/position.js';
import { openCommandLog, resolveLogLocation } from '../log/command-log.js';
import { checkPartsAtStart, logEventReader, type LogEvent } from '../log/input.js';

function stamped(events: LogEvent[]): string[] {
  const lines: string[] = new Array<string>(events.length);
  for (let i = 0; i < events.length; i++) {
    const { text, position } = events[i] as LogEvent;
    lines[i] = text.charCodeAt(text.length - 1) === 125 ? stampJson(text, position) : stampLine(text, position);
  }
  return lines;
}

/** The sinks keep positions per partition of the log (a group's workers wrote them): said with the log, as a configuration error. */
function partsHeld(path: string, error: unknown): unknown {
  if (!(error instanceof CqpError) || error.code !== 'PARTS_HELD') return error;
  return new CqpError('CONFIG', `log source, reading ${path}: ${error.message}`, { cause: error });
}

/** A worker's share of a log that several workers read together (`group`). */
async function shareOf(path: string, group: string, bounds: { from?: string | undefined; until?: string | undefined }, ctx: StageContext & { resume: PositionMap }): Promise<SourceInstance> {
  const bound = bounds.from !== undefined ? 'from' : bounds.until !== undefined ? 'until' : undefined;
  if (bound) throw new CqpError('USAGE', `log source: \`${bound}\` does not go with \`group\`: the workers of a group read every partition from where their sinks stand, and follow it until stopped`);
  const log = await openCommandLog(path, ctx.cwd);
  if (!log.readShare) {
    await log.close();
    throw new CqpError('USAGE', `log source: ${path}: \`group\` needs a log the workers all reach and that is split in partitions, a JetStream log (nats://HOST:PORT/STREAM, created with partitions: N)`);
  }
  const share = log.readShare({ group, resume: ctx.resume, signal: ctx.signal, warn: ctx.warn, worker: ctx.worker });
  return {
    async *batches() {
      try {
        for await (const events of share) yield { lines: stamped(events) };
      } finally {
        await log.close();
      }
    },
  };
}

export default defineSource({
  name: 'log',
  summary: 'read events from the command log, optionally following new appends',
  description:
    'Emits the events stored in a command log, in sequence order, each stamped with its position ' +
    '(log:<logId>:<seq>) so that a restarted pipeline resumes right after the last event it applied. ' +
    'With group: NAME, every cqp run of that group reads its share of a partitioned JetStream log: each ' +
    'partition is read by one worker at a time under a lease, and stamped as a source of its own ' +
    '(log:<logId>/p<k>:<seq>); a worker that stops or dies leaves its partitions to the others. ' +
    'POS is a sequence number or an ISO-8601 append time; both bounds are inclusive.',
  options: z.object({
    path: z.string().min(1).describe('the command log: a file, e.g. data/events.log, or a JetStream stream, nats://HOST:PORT/STREAM'),
    from: z.string().optional().describe('first event to read: a sequence number (1200) or an ISO-8601 append time'),
    until: z.string().optional().describe('last event to read: a sequence number or an ISO-8601 append time'),
    follow: z.boolean().default(false).describe('keep reading as new events are appended (like tail -f), until stopped'),
    group: z
      .string()
      .regex(/^[A-Za-z0-9_-]+$/, 'a group name is letters, digits, _ and - only')
      .optional()
      .describe('share a partitioned JetStream log with the other workers of this group: each partition is read by one of them at a time (follows until stopped)'),
  }),
  resumable: true,
  groupOption: 'group',
  examples: [
    { path: 'data/events.log' },
    { path: 'data/events.log', from: '1000', until: '2000' },
    { path: 'data/events.log', from: '2024-05-30T08:00:00Z', follow: true },
    { path: 'nats://127.0.0.1:4222/events', group: 'views' },
  ],
  async create({ path, from, until, follow, group }, ctx) {
    if (group !== undefined) return shareOf(path, group, { from, until }, ctx);
    const file = resolveLogLocation(path, ctx.cwd);
    const read = logEventReader(file, { from, until, follow });
    await checkPartsAtStart(file, { from, until, follow }, ctx.resume).catch((error: unknown) => {
      throw partsHeld(path, error);
    });
    return {
      async *batches() {
        try {
          for await (const events of read(ctx.resume, ctx.signal)) yield { lines: stamped(events) };
        } catch (error) {
          throw partsHeld(path, error);
        }
      },
    };
  },
});
