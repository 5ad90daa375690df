import * as z from 'zod';
import { defineSink } from '../core/component.js';
import { writeAll } from '../core/runtime.js';

export default defineSink({
  name: 'stdout',
  summary: 'write events to standard output as NDJSON, position stamps removed (at-least-once)',
  options: z.object({}),
  writesStdout: true,
  examples: [{}],
  create() {
    return {
      async write(batch) {
        let text = '';
        for (const e of batch) text += `${e.text}\n`;
        await writeAll(process.stdout, text);
      },
      async close() {},
    };
  },
});
