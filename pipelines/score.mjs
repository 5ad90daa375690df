// A `run:` stage of pipelines/example.yaml, as any program in any language could be: it reads NDJSON on
// stdin and writes NDJSON on stdout, keeping each event's "@cqp" key (it changes the event it read).
// It scores each sale by its value: payload.score = qty × price, rounded to cents.
import { createInterface } from 'node:readline';

for await (const line of createInterface({ input: process.stdin, crlfDelay: Infinity })) {
  if (line.trim() === '') continue;
  const e = JSON.parse(line);
  if (typeof e.payload?.qty === 'number' && typeof e.payload?.price === 'number') {
    e.payload.score = Math.round(e.payload.qty * e.payload.price * 100) / 100;
  }
  if (!process.stdout.write(`${JSON.stringify(e)}\n`)) await new Promise((resolve) => process.stdout.once('drain', resolve));
}
