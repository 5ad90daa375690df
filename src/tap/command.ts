/**
 * `cqp tap`: prints the live events of a running pipeline (`cqp run --metrics HOST:PORT`) as NDJSON,
 * from its `GET /tap` stream (supervisor/taps.ts). The supervisor filters (`--where`) and paces
 * (`--limit`) for each tap; this end formats the lines, stops after `--count` and says how many events
 * the tap missed because it read too slowly.
 */
import { request, type IncomingMessage } from 'node:http';
import type { Writable } from 'node:stream';
import { compileExpression } from '../core/expression.js';
import { CqpError, messageOf } from '../core/errors.js';

export interface TapOptions {
  url: string;
  outputsOf: string[];
  inputsOf: string[];
  errorsOf: string[];
  where?: string | undefined;
  limit: number;
  count?: number | undefined;
  meta: boolean;
}

/** The head of an event line of the `/tap` stream, before its event: `reason` when it was rejected. */
interface TapHead {
  reason?: string;
}

const DROPPED = '{"dropped":';
const EVENT = ',"event":';

/** The `/tap` address for these options. */
export function tapUrl(options: TapOptions): URL {
  let base: URL;
  try {
    base = new URL(options.url);
  } catch {
    throw new CqpError('USAGE', `--url: expected the address cqp run --metrics serves, such as http://127.0.0.1:9464, got "${options.url}"`);
  }
  if (base.protocol !== 'http:') throw new CqpError('USAGE', `--url: expected an http:// address, got "${options.url}"`);
  const url = new URL('/tap', base);
  for (const glob of options.outputsOf) url.searchParams.append('outputs-of', glob);
  for (const glob of options.inputsOf) url.searchParams.append('inputs-of', glob);
  for (const glob of options.errorsOf) url.searchParams.append('errors-of', glob);
  if (options.where !== undefined) url.searchParams.set('where', options.where);
  url.searchParams.set('limit', String(options.limit));
  return url;
}


/** Runs the tap until `--count` events, the end of the pipeline, or SIGINT/SIGTERM; resolves with the exit code. */
export async function tapCommand(options: TapOptions, stdout: Writable, err: (line: string) => void): Promise<number> {
  if (options.outputsOf.length + options.inputsOf.length + options.errorsOf.length === 0) {
    throw new CqpError('USAGE', 'say what to tap: --outputs-of, --inputs-of or --errors-of (a component name or a glob such as "enrich*")');
  }
  if (options.where !== undefined) compileExpression(options.where, '--where');
  const url = tapUrl(options);
  const res = await new Promise<IncomingMessage>((resolve, reject) => {
    const req = request(url, resolve);
    req.on('error', (error) => reject(new CqpError('IO', `cannot reach ${options.url}: ${messageOf(error)} (is cqp run --metrics serving there?)`)));
    req.end();
  });
  res.setEncoding('utf8');
  if (res.statusCode !== 200) {
    let body = '';
    for await (const chunk of res) body += chunk as string;
    if (res.statusCode === 400) throw new CqpError('USAGE', `--${body.trim()}`);
    throw new CqpError('IO', `${url.origin} answered ${res.statusCode} to /tap${res.statusCode === 404 ? ' (a cqp without cqp tap?)' : ''}: ${body.trim()}`);
  }
  let shown = 0;
  let dropped = 0;
  let partial = '';
  // What stdout cannot take yet holds the stream: the supervisor then drops for this tap, not the pipeline.
  const out = (text: string): void => {
    if (!stdout.write(text) && !res.isPaused()) {
      res.pause();
      stdout.once('drain', () => res.resume());
    }
  };
  let finished = false;
  const finish = (why: string | undefined): number => {
    if (finished) return 0;
    finished = true;
    res.destroy();
    if (dropped > 0) err(`cqp tap: dropped ${dropped} ${dropped === 1 ? 'event' : 'events'}: the tap read too slowly to keep up (the pipeline went on at its pace)`);
    if (why !== undefined) err(`cqp tap: ${why}`);
    return 0;
  };
  return await new Promise<number>((resolve) => {
    const stop = (): void => resolve(finish(undefined));
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    res.on('data', (text: string) => {
      const lines = (partial + text).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        if (line === '') continue;
        if (line.startsWith(DROPPED)) {
          dropped = (JSON.parse(line) as { dropped: number }).dropped;
          if (options.meta) out(`${line}\n`);
          continue;
        }
        if (options.meta) out(`${line}\n`);
        else {
          // The event is the last field, as the pipeline wrote it (no number loses digits); the head
          // before it is JSON strings only, where '"event":' cannot occur unescaped.
          const at = line.indexOf(EVENT);
          const event = line.slice(at + EVENT.length, -1);
          const head = line.includes(',"reason":') ? (JSON.parse(`${line.slice(0, at)}}`) as TapHead) : {};
          out(head.reason === undefined ? `${event}\n` : `{"reason":${JSON.stringify(head.reason)},"event":${event}}\n`);
        }
        if (options.count !== undefined && ++shown >= options.count) {
          resolve(finish(undefined));
          return;
        }
      }
    });
    res.on('end', () => resolve(finish('the pipeline stopped')));
    res.on('error', () => resolve(finish('the connection to the pipeline was lost')));
    res.on('close', () => resolve(finish('the connection to the pipeline was lost')));
  });
}
