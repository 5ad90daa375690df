// The baseline: readline + JSON.parse + JSON.stringify, one event at a time.
import readline from 'node:readline';

const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of rl) {
  if (line === '') continue;
  const event = JSON.parse(line);
  if (!process.stdout.write(`${JSON.stringify(event)}\n`)) await new Promise((r) => process.stdout.once('drain', r));
}
