// A deliberately slow NDJSON stage for the bench: passes lines on, sleeping 1 ms every 10 lines.
import readline from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';

let n = 0;
for await (const line of readline.createInterface({ input: process.stdin, crlfDelay: Infinity })) {
  if (!process.stdout.write(`${line}\n`)) await new Promise((r) => process.stdout.once('drain', r));
  if (++n % 10 === 0) await sleep(1);
}
