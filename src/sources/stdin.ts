import * as z from 'zod';
import { collectBatch, defineSource, type SourceBatch } from '../core/component.js';
import { checkObjectLine } from '../core/check-line.js';
import { LineSplitter, type SplitLine } from '../core/lines.js';
import { DEFAULT_MAX_LINE_BYTES } from '../core/runtime.js';

export default defineSource({
  name: 'stdin',
  summary: 'read NDJSON events from standard input (not resumable)',
  description:
    'Checks each line is a JSON object (bad lines follow --on-error) and passes it on. Standard input has no ' +
    'position a restart could resume from, so events are not stamped: sinks fed from stdin store ' +
    'everything they get, and `cqp run` cannot replay what a crash lost. Use the file, log or kinesis ' +
    'source for exactly-once.',
  options: z.object({}),
  resumable: false,
  readsStdin: true,
  examples: [{}],
  create(_options, ctx) {
    const max = ctx.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES;
    const take = (lines: SplitLine[]): SourceBatch =>
      collectBatch(lines, (line, out) => {
        const text = checkObjectLine(line, ctx.policy, max);
        if (text !== undefined) out.push(text);
      });
    return {
      async *batches() {
        const splitter = new LineSplitter(max);
        for await (const chunk of process.stdin) {
          yield take(splitter.push(chunk as Buffer));
          if (ctx.signal.aborted) return;
        }
        yield take(splitter.end());
      },
    };
  },
});
