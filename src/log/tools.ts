import { once } from 'node:events';
import { open, stat } from 'node:fs/promises';
import { basename } from 'node:path';
import type { Writable } from 'node:stream';
import { CqpError } from '../core/errors.js';
import type { PositionMap } from '../core/position.js';
import { HEADER_SIZE, LogCorruptError, decodeHeader, parseLogBounds, type LogPos } from './format.js';
import { isLocationUrl, openCommandLog, type CommandLog } from './command-log.js';
import { checkBoundsOnLog } from './input.js';
import { readLog, readLogTail } from './reader.js';
import type { RepairResult } from './repair.js';
import { RecordScanner } from './scanner.js';

export interface LogCatOptions {
  from?: LogPos | undefined;
  until?: LogPos | undefined;
  /** Wrap each event as `{"seq":N,"time":"ISO","event":<bytes>}`. */
  meta?: boolean | undefined;
}

/**
 * Writes the events of the log to `out` as NDJSON, one read's worth per write, honouring
 * backpressure. The bytes are copied as stored: no JSON parse, even with `meta`. A closed
 * downstream (EPIPE) ends the copy quietly. A log given by its location is opened and closed here;
 * an opened one is left open for its owner.
 */
export async function logCat(at: CommandLog | string, options: LogCatOptions, out: Writable): Promise<{ count: number }> {
  const log = typeof at === 'string' ? await openCommandLog(at) : at;
  try {
    return await copyEvents(log, options, out);
  } finally {
    if (typeof at === 'string') await log.close();
  }
}

async function copyEvents(log: CommandLog, options: LogCatOptions, out: Writable): Promise<{ count: number }> {
  let count = 0;
  let broken = false;
  let failure: Error | undefined;
  const onError = (error: NodeJS.ErrnoException): void => {
    broken = true;
    if (error.code !== 'EPIPE') failure = error;
  };
  out.on('error', onError);
  let lastTime = -1;
  let iso = '';
  try {
    for await (const batch of log.read({ from: options.from, until: options.until })) {
      if (broken) break;
      let size = 0;
      for (const r of batch) size += r.bytes.length + 1;
      if (options.meta) size += batch.length * 80;
      const chunk = Buffer.allocUnsafe(size);
      let at = 0;
      for (const r of batch) {
        if (options.meta) {
          if (r.time !== lastTime) {
            lastTime = r.time;
            iso = new Date(r.time).toISOString();
          }
          at += chunk.write(`{"seq":${r.seq},"time":"${iso}","event":`, at, 'latin1');
          at += r.bytes.copy(chunk, at);
          chunk[at++] = 0x7d;
        } else {
          at += r.bytes.copy(chunk, at);
        }
        chunk[at++] = 0x0a;
      }
      count += batch.length;
      if (!out.write(chunk.subarray(0, at))) {
        try {
          await once(out, 'drain');
        } catch {
          break;
        }
      }
    }
  } finally {
    out.off('error', onError);
  }
  if (failure) throw new CqpError('IO', `cannot write the events of ${log.location}: ${failure.message}`, { cause: failure });
  return { count };
}

export interface VerifyResult {
  ok: boolean;
  /** Good records before the end or the first bad one. */
  count: number;
  /** `where` says where the record is, for people (its byte offset in a file, its stream sequence). */
  firstBad?: { seq: number; offset: number; reason: string; where?: string };
  /** An incomplete last record (cut by the next writer; not corruption). */
  torn?: { offset: number; bytes: number };
  /** Good records that carry no checksum to check (a JetStream log's records appended before checksums were stored). */
  unchecked?: number;
}

/** Checks every record of the log from the start, ignoring the index. */
export async function logVerify(path: string): Promise<VerifyResult> {
  const fh = await open(path, 'r').catch((error: Error) => {
    throw new CqpError('IO', `${path}: cannot open the command log (${error.message}); check the path`, { cause: error });
  });
  try {
    const head = Buffer.alloc(HEADER_SIZE);
    const { bytesRead } = await fh.read(head, 0, HEADER_SIZE, 0);
    try {
      decodeHeader(head.subarray(0, bytesRead), path);
    } catch (error) {
      return { ok: false, count: 0, firstBad: { seq: 0, offset: 0, reason: error instanceof Error ? error.message : String(error) } };
    }
    const scanner = new RecordScanner(fh, path, HEADER_SIZE, 1, 4 << 20);
    let count = 0;
    try {
      for (let batch = await scanner.next(); batch; batch = await scanner.next()) count += batch.length;
    } catch (error) {
      if (error instanceof LogCorruptError) return { ok: false, count, firstBad: { seq: error.seq, offset: error.offset, reason: error.reason } };
      throw error;
    }
    return scanner.torn ? { ok: true, count, torn: scanner.torn } : { ok: true, count };
  } finally {
    await fh.close();
  }
}

export interface LogStat {
  path: string;
  logId: string;
  count: number;
  firstSeq: number | undefined;
  lastSeq: number | undefined;
  firstTime: number | undefined;
  lastTime: number | undefined;
  /** Bytes stored. */
  size: number;
  /** Partitions the events are spread over (a log on JetStream). */
  partitions?: number | undefined;
  /** Last position per source. */
  positions: PositionMap;
}

/** Count, first/last seq and time, size and log id (from the index and the records after it). */
export async function logStat(path: string): Promise<LogStat> {
  const tail = await readLogTail(path);
  const size = (await stat(path)).size;
  let firstTime: number | undefined;
  for await (const batch of readLog(path, { until: { seq: 1 } })) firstTime = batch[0]?.time;
  const some = tail.lastSeq > 0;
  return {
    path,
    logId: tail.logId,
    count: tail.lastSeq,
    firstSeq: some ? 1 : undefined,
    lastSeq: some ? tail.lastSeq : undefined,
    firstTime,
    lastTime: some ? tail.lastTime : undefined,
    size,
    positions: tail.positions,
  };
}

export type LogSubcommand = 'cat' | 'verify' | 'stat' | 'repair';

export interface LogCommandOptions {
  dryRun?: boolean | undefined;
  from?: string | undefined;
  until?: string | undefined;
  meta?: boolean | undefined;
  stdout?: Writable | undefined;
  stderr?: Writable | undefined;
}

function iso(time: number | undefined): string {
  return time === undefined ? '-' : new Date(time).toISOString();
}

function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${v.toFixed(1)} ${units[u]} (${n} bytes)`;
}

/** What a repair cut (or would cut), where it went, and what is left, for people. */
function describeRepair(file: string, r: RepairResult, dryRun: boolean): string {
  const what = `${r.records} record${r.records === 1 ? '' : 's'} (seq ${r.firstLostSeq} on), ${bytes(r.bytes ?? 0)}`;
  if (dryRun) {
    return (
      `${file}: would cut at byte offset ${r.offset} (${r.reason}): ${what}; ${r.kept} records kept\n` +
      `  nothing was changed; without --dry-run the cut part is kept in ${basename(file)}.cut-<time> beside the log`
    );
  }
  return (
    `${file}: cut at byte offset ${r.offset} (${r.reason}): ${what}, kept in ${r.savedTo}; ${r.kept} records kept\n` +
    `  the log now ends at seq ${r.kept}; a resumable source that feeds it sends the cut events again from there`
  );
}

/**
 * Runs `cqp log SUB FILE`, printing for people, and returns the exit code: 0 when the log checks
 * out, 1 when it is corrupt. Other failures (a missing file, a bad --from) are thrown.
 */
export async function runLogCommand(sub: LogSubcommand, file: string, opts: LogCommandOptions = {}): Promise<number> {
  const stdout = opts.stdout ?? process.stdout;
  const stderr = opts.stderr ?? process.stderr;
  const say = (text: string): void => {
    stdout.write(`${text}\n`);
  };
  if (sub === 'repair') return repairCommand(file, opts.dryRun === true, say);
  const log = await openCommandLog(file);
  try {
    switch (sub) {
      case 'cat': {
        const { from, until } = parseLogBounds(opts.from, opts.until);
        await checkBoundsOnLog(log, opts);
        await logCat(log, { from, until, meta: opts.meta }, stdout);
        return 0;
      }
      case 'verify': {
        const r = await log.verify();
        if (!r.ok && r.firstBad) {
          stderr.write(
            `${file}: CORRUPT at record ${r.firstBad.seq}, ${r.firstBad.where ?? `byte offset ${r.firstBad.offset}`}: ${r.firstBad.reason}\n` +
              `  ${r.count} good records before it; ${
                isLocationUrl(file) ? `\`cqp log cat ${file} --until ${r.firstBad.seq - 1}\` reads them` : `\`cqp log repair ${file}\` cuts the log there`
              }\n`,
          );
          return 1;
        }
        say(`${file}: ok, ${r.count} records`);
        if (r.unchecked) say(`  ${r.unchecked} of them carry no checksum (appended before checksums were stored): read, not checked`);
        if (r.torn) say(`  incomplete last record at byte offset ${r.torn.offset} (${r.torn.bytes} bytes), cut on the next append`);
        return 0;
      }
      case 'stat': {
        const s = await log.stat();
        const sources = Object.entries(s.positions);
        say(
          [
            `log         ${s.path}`,
            `log id      ${s.logId}`,
            `records     ${s.count}`,
            `first seq   ${s.firstSeq ?? '-'}   ${iso(s.firstTime)}`,
            `last seq    ${s.lastSeq ?? '-'}   ${iso(s.lastTime)}`,
            `size        ${bytes(s.size)}`,
            ...(s.partitions === undefined ? [] : [`partitions  ${s.partitions}`]),
            ...sources.map(([source, n], i) => `${i === 0 ? 'positions   ' : '            '}${source}:${n}`),
          ].join('\n'),
        );
        return 0;
      }
    }
  } catch (error) {
    if (error instanceof CqpError && error.code === 'CORRUPT') {
      stderr.write(`${error.message}\n`);
      return 1;
    }
    throw error;
  } finally {
    await log.close();
  }
}

/** `cqp log repair FILE`: cuts a damaged log file at its first bad record (a log on a server is refused). */
async function repairCommand(file: string, dryRun: boolean, say: (text: string) => void): Promise<number> {
  if (isLocationUrl(file)) {
    throw new CqpError('USAGE', `${file}: repair cuts a damaged log file; a log on a server is kept whole by the server (\`cqp log verify\` checks it)`);
  }
  const { logRepair } = await import('./repair.js');
  const r = await logRepair(file, { dryRun });
  if (!r.cut) say(`${file}: nothing to repair, ${r.kept} records check out`);
  else say(describeRepair(file, r, dryRun));
  return 0;
}
