import { basename, dirname, resolve } from 'node:path';
import * as z from 'zod';
import { checkObjectLine } from '../core/check-line.js';
import { collectBatch, defineSource, type SourceBatch } from '../core/component.js';
import { resumeAt, stampLine, type PositionMap } from '../core/position.js';
import { DEFAULT_MAX_LINE_BYTES } from '../core/runtime.js';
import { CheckpointWriter, readCheckpoint } from '../follow/checkpoint.js';
import { followFile, type FileLines, type ResumePoint } from '../follow/follow.js';

const SOURCE_PREFIX = 'file:';

/** Resume points from the positions sinks hold (`file:<fingerprint>` → offset of a line start). */
export function resumePointsOf(resume: PositionMap): ResumePoint[] {
  const points: ResumePoint[] = [];
  for (const [source, n] of Object.entries(resume)) {
    if (!source.startsWith(SOURCE_PREFIX)) continue;
    const at = resumeAt(n);
    points.push({ fingerprint: source.slice(SOURCE_PREFIX.length), offset: Number(at.n), inclusive: at.inclusive });
  }
  return points;
}

export default defineSource({
  name: 'file',
  summary: 'read NDJSON events from a file, optionally following it like tail -F',
  description:
    'Emits each line of the file (a JSON object; bad lines follow --on-error), stamped with its position ' +
    'file:<fingerprint>:<byte offset>, where the fingerprint is a hash of the file\'s first line, so a ' +
    'restart resumes in the right file even after it was renamed. With --follow it keeps reading as the ' +
    'file grows, waits for a partial last line to be finished, starts over when the file is truncated ' +
    '(copy-and-truncate rotation loses the lines written after the last read and before the truncation), ' +
    'and on rename rotation finishes the old file before moving to the new one. --checkpoint saves the ' +
    'position after each batch for standalone use (a crash between printing a batch and saving its position ' +
    'prints that batch again on restart); inside `cqp run` the sinks\' positions are used, exactly once.',
  options: z.object({
    path: z.string().min(1).describe('the NDJSON file to read, e.g. data/incoming.ndjson'),
    follow: z.boolean().default(false).describe('keep reading as the file grows, through truncation and rotation (like tail -F), until stopped'),
    start: z.enum(['beginning', 'end']).default('beginning').describe('where to start when there is no position to resume from: the beginning of the file, or its end (new lines only)'),
    checkpoint: z.string().min(1).optional().describe('a file where the position is saved after each batch and resumed from on start (standalone use)'),
    pollMs: z.number().int().min(1).max(60_000).default(50).describe('milliseconds between checks for changes when file-system events are missed'),
  }),
  resumable: true,
  examples: [
    { path: 'data/incoming.ndjson' },
    { path: 'data/incoming.ndjson', follow: true, start: 'end' },
    { path: '/var/log/app/events.ndjson', follow: true, checkpoint: 'state/events.checkpoint', pollMs: 100 },
  ],
  create({ path, follow, start, checkpoint, pollMs }, ctx) {
    const file = resolve(ctx.cwd, path);
    const max = ctx.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES;
    const saver = checkpoint === undefined ? undefined : new CheckpointWriter(resolve(ctx.cwd, checkpoint));
    // Inside `cqp run` the sinks' durable positions decide; the checkpoint is for standalone use.
    let resume = resumePointsOf(ctx.resume);
    if (resume.length === 0 && saver) {
      const saved = readCheckpoint(saver.file);
      if (saved) resume = [{ ...saved, inclusive: true }];
    }
    const quietNames = saver && dirname(saver.file) === dirname(file) ? saver.names.map((n) => basename(n)) : [];

    const stamp = (chunk: FileLines): SourceBatch => {
      const source = SOURCE_PREFIX + chunk.fingerprint;
      return collectBatch(chunk.lines, (line, out) => {
        const text = checkObjectLine(line, ctx.policy, max, path);
        if (text !== undefined) out.push(stampLine(text, { source, n: String(line.start) }));
      });
    };

    return {
      async *batches() {
        const chunks = followFile({ path: file, follow, start, pollMs, maxLineBytes: max, resume, signal: ctx.signal, warn: ctx.warn, quietNames });
        try {
          for await (const chunk of chunks) {
            const batch = stamp(chunk);
            if (batch.error === undefined) saver?.prepare({ fingerprint: chunk.fingerprint, offset: chunk.next });
            yield batch;
            // Asked for more: the batch was taken.
            saver?.commit();
          }
        } finally {
          // The runtime stops asking once it has written the last batch when the stage is told to stop.
          if (ctx.signal.aborted) saver?.commit();
        }
      },
    };
  },
});
