import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterEach } from 'vitest';
import { readLog, type ReadLogOptions } from '../../src/log/reader.js';
import type { LogRecord } from '../../src/log/format.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A fresh folder removed after the test. */
export function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'cqp-log-'));
  dirs.push(d);
  return d;
}

export async function readAll(path: string, options: ReadLogOptions = {}): Promise<LogRecord[]> {
  const out: LogRecord[] = [];
  for await (const batch of readLog(path, options)) out.push(...batch);
  return out;
}

/** Reads until the reader throws; returns what came before and the error. */
export async function readUntilError(path: string, options: ReadLogOptions = {}): Promise<{ records: LogRecord[]; error: unknown }> {
  const records: LogRecord[] = [];
  try {
    for await (const batch of readLog(path, options)) records.push(...batch);
  } catch (error) {
    return { records, error };
  }
  return { records, error: undefined };
}

/** A writable that collects what it receives. */
export function collector(): Writable & { text(): string } {
  const chunks: Buffer[] = [];
  const w = new Writable({
    write(chunk: Buffer, _enc, cb) {
      chunks.push(chunk);
      cb();
    },
  }) as Writable & { text(): string };
  w.text = () => Buffer.concat(chunks).toString('utf8');
  return w;
}

export function event(i: number, pad = 0): string {
  return JSON.stringify({ header: { eventId: `events/${i}`, eventName: ['create.ice_cream'] }, payload: { n: i, pad: 'x'.repeat(pad) } });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
