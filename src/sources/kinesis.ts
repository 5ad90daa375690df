import * as z from 'zod';
import { collectBatch, defineSource, type SourceBatch } from '../core/component.js';
import { CqpError } from '../core/errors.js';
import { nestingError } from '../core/json.js';
import { resumeAt, stampLine, subPosition, type Position } from '../core/position.js';
import type { KinesisTarget } from '../kinesis/client.js';
import type { ResumePoint, StartAt } from '../kinesis/reader.js';

/** Parses `--start`: trim-horizon, latest or at-timestamp:ISO. */
export function parseStart(text: string): StartAt {
  if (text === 'trim-horizon' || text === 'latest') return { type: text };
  if (text.startsWith('at-timestamp:')) {
    const iso = text.slice('at-timestamp:'.length);
    const timestamp = new Date(iso);
    if (!Number.isNaN(timestamp.getTime()) && /^\d{4}-\d{2}-\d{2}/.test(iso)) return { type: 'at-timestamp', timestamp };
  }
  throw new CqpError('USAGE', `--start "${text}" is not a start position; use trim-horizon, latest or at-timestamp:2024-05-30T08:00:00Z`);
}

function isStart(text: string): boolean {
  try {
    parseStart(text);
    return true;
  } catch {
    return false;
  }
}

const options = z.object({
  stream: z.string().min(1).describe('Kinesis stream name'),
  endpoint: z.string().optional().describe('Kinesis endpoint URL (kinesalite, LocalStack); default: AWS'),
  region: z.string().optional().describe('AWS region (default: AWS_REGION, else us-east-1)'),
  start: z
    .string()
    .refine(isStart, { message: 'use trim-horizon, latest or at-timestamp:ISO-8601 time (at-timestamp:2024-05-30T08:00:00Z)' })
    .default('trim-horizon')
    .describe('where shards without a stored position start: trim-horizon|latest|at-timestamp:ISO'),
  pollMs: z.number().int().positive().default(250).describe('wait after an empty read of a shard, in ms'),
  maxIdleMs: z.number().int().positive().optional().describe('stop after this many ms without records once every shard is at its tip'),
});

/** Splits a record's data into its non-empty lines (CRLF tolerated, a leading BOM dropped). */
function recordLines(data: Buffer): string[] {
  let text = data.toString('utf8');
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  const out: string[] = [];
  let start = 0;
  while (start < text.length) {
    let end = text.indexOf('\n', start);
    if (end < 0) end = text.length;
    let line = text.slice(start, end);
    if (line.charCodeAt(line.length - 1) === 13) line = line.slice(0, -1);
    if (line.trim().length > 0) out.push(line);
    start = end + 1;
  }
  return out;
}

/** Why a line is not an event, or undefined when it is a JSON object. */
function badLine(line: string): string | undefined {
  const tooDeep = nestingError(line);
  if (tooDeep !== undefined) return tooDeep;
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch (error) {
    return `invalid JSON: ${(error as Error).message}`;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'not a JSON object (events are objects)';
  return undefined;
}

export default defineSource({
  name: 'kinesis',
  summary: 'reads every shard of a Kinesis stream (NDJSON lines in each record), resumable per shard',
  description:
    'Reads all shards of --stream, children only after their parents are finished, retrying throttling with ' +
    'backoff. Each record holds one or more NDJSON lines. Every event is stamped with kinesis:<stream>/<shard> ' +
    'and its sequence number, so a restart resumes each shard where it stopped. Streams do not end: the source ' +
    'runs until stopped, or until --max-idle-ms passes without records once every shard is at its tip.',
  options,
  resumable: true,
  examples: [
    { stream: 'ice-creams' },
    { stream: 'ice-creams', endpoint: 'http://127.0.0.1:4567', start: 'latest' },
    { stream: 'ice-creams', start: 'at-timestamp:2024-05-30T08:00:00Z', maxIdleMs: 5000 },
  ],
  async create(o, ctx) {
    // The AWS SDK loads only when a kinesis source starts, not with every cqp command.
    const { createKinesisClient } = await import('../kinesis/client.js');
    const { readShards } = await import('../kinesis/reader.js');
    const target: KinesisTarget = { endpoint: o.endpoint, region: o.region };
    const start = parseStart(o.start);
    const prefix = `kinesis:${o.stream}/`;
    const resume: Record<string, ResumePoint> = {};
    for (const [source, n] of Object.entries(ctx.resume)) {
      if (source.startsWith(prefix)) resume[source.slice(prefix.length)] = resumeAt(n);
    }
    const client = createKinesisClient(target);
    return {
      async *batches(): AsyncGenerator<SourceBatch> {
        let no = 0;
        try {
          const reading = readShards({
            client,
            stream: o.stream,
            target,
            start,
            resume,
            pollMs: o.pollMs,
            ...(o.maxIdleMs !== undefined ? { maxIdleMs: o.maxIdleMs } : {}),
            signal: ctx.signal,
            warn: ctx.warn,
          });
          for await (const records of reading) {
            const batch = collectBatch(records, (record, lines) => {
              const texts = recordLines(record.data);
              const at: Position = { source: prefix + record.shardId, n: record.sequenceNumber };
              for (let k = 0; k < texts.length; k++) {
                const line = texts[k] as string;
                no++;
                const problem = badLine(line);
                if (problem !== undefined) {
                  ctx.policy.report(no, `${problem} (${at.source} record ${at.n})`, line);
                  continue;
                }
                // Several events from one record get sub-positions so each has its own place (see position.ts).
                lines.push(stampLine(line, texts.length === 1 ? at : subPosition(at, k)));
              }
            });
            if (batch.lines.length > 0 || batch.error !== undefined) yield batch;
          }
        } finally {
          client.destroy();
        }
      },
    };
  },
});
