/**
 * Reading a JetStream log: records by seq or append time, following new appends, and the checks
 * behind `cqp log verify`. The stream sequence is the record's sequence number and the message's time
 * its append time.
 */
import { DeliverPolicy, type JsMsg, type OrderedConsumerOptions } from '@nats-io/jetstream';
import { CqpError, messageOf } from '../../core/errors.js';
import { advance, parsePosition, type PositionMap } from '../../core/position.js';
import { crc32c } from '../crc32c.js';
import type { LogRecord } from '../format.js';
import type { ReadLogOptions } from '../reader.js';
import type { VerifyResult } from '../tools.js';
import { CRC_HEADER, ID_HEADER, metaOf, partitionSubject, POSITION_HEADER, type Session } from './stream.js';

/** Largest batch of records a reader yields at once. */
const READ_BATCH = 4096;

function recordOf(m: JsMsg): LogRecord {
  const rec: LogRecord = { seq: m.seq, time: Number(m.timestampNanos / 1_000_000n), bytes: Buffer.from(m.data.buffer, m.data.byteOffset, m.data.byteLength) };
  const pos = m.headers?.get(POSITION_HEADER);
  if (pos) rec.position = pos;
  return rec;
}

/** What a read of the stream takes beyond the bounds: headers only (no event bytes), for positions. */
type StreamReadOptions = ReadLogOptions & { headersOnly?: boolean; partition?: number };

/** The stream's messages from `from` to `until` (inclusive), each made into a `T` by `each`, in batches. */
async function* readMessages<T extends { seq: number; time: number }>(s: Session, options: StreamReadOptions, each: (m: JsMsg) => T): AsyncGenerator<T[]> {
  const { from, until, follow = false, signal } = options;
  const info = await s.infoOrFail();
  metaOf(s.location, info);
  const endSeq = follow ? Number.POSITIVE_INFINITY : info.state.last_seq;
  const untilSeq = until && 'seq' in until ? until.seq : Number.POSITIVE_INFINITY;
  const stopSeq = Math.min(endSeq, untilSeq);
  const firstSeq = Math.max(info.state.first_seq, 1);
  if (stopSeq < firstSeq || (from && 'seq' in from && from.seq > stopSeq)) return;
  if (!follow && info.state.messages === 0) return;
  if (!follow && from && 'time' in from && Date.parse(info.state.last_ts) < from.time) return;
  const opts: Partial<OrderedConsumerOptions> = { headers_only: options.headersOnly === true };
  // One partition's records only: the subject the writer gives them.
  if (options.partition !== undefined) opts.filter_subjects = partitionSubject(s.where.stream, options.partition);
  if (from && 'seq' in from && from.seq > firstSeq) Object.assign(opts, { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: from.seq });
  else if (from && 'time' in from) Object.assign(opts, { deliver_policy: DeliverPolicy.StartTime, opt_start_time: new Date(from.time).toISOString() });
  else Object.assign(opts, { deliver_policy: DeliverPolicy.All });
  const consumer = await s.js.consumers.get(s.where.stream, opts);
  const messages = await consumer.consume({ max_messages: READ_BATCH });
  const queue: T[] = [];
  let wake: (() => void) | undefined;
  let room: (() => void) | undefined;
  let ended = false;
  let failure: unknown;
  const poke = (): void => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const stop = (): void => {
    ended = true;
    void messages.close();
    poke();
    room?.();
  };
  signal?.addEventListener('abort', stop, { once: true });
  const pump = (async () => {
    try {
      for await (const m of messages) {
        queue.push(each(m));
        poke();
        if (m.seq >= stopSeq) break;
        if (queue.length >= READ_BATCH * 4) await new Promise<void>((resolve) => (room = resolve));
        if (ended) break;
      }
    } catch (error) {
      failure = error;
    } finally {
      ended = true;
      poke();
    }
  })();
  try {
    for (;;) {
      while (queue.length === 0 && !ended) await new Promise<void>((resolve) => (wake = resolve));
      if (signal?.aborted) return;
      if (queue.length === 0) {
        if (failure) throw new CqpError('IO', `${s.location}: reading the stream failed (${messageOf(failure)})`, { cause: failure });
        return;
      }
      let out = queue.splice(0, READ_BATCH);
      const r = room;
      room = undefined;
      r?.();
      if (until) {
        const past = out.findIndex((x) => ('seq' in until ? x.seq > until.seq : x.time > until.time));
        if (past >= 0) {
          if (past > 0) yield out.slice(0, past);
          return;
        }
      }
      out = out.filter((x) => x.seq <= stopSeq);
      if (out.length > 0) yield out;
      if ((out.at(-1)?.seq ?? 0) >= stopSeq) return;
    }
  } finally {
    signal?.removeEventListener('abort', stop);
    ended = true;
    room?.();
    await messages.close().catch(() => undefined);
    await pump;
  }
}

/** The log's records from `from` to `until` (inclusive), following new appends when asked. */
export function readRecords(s: Session, options: StreamReadOptions): AsyncGenerator<LogRecord[]> {
  return readMessages(s, options, recordOf);
}

/**
 * Advances `positions` by the position headers of records `afterSeq + 1` to `lastSeq` (headers only:
 * no event bytes cross the wire). Returns how many records were read and the dedupe id of the last.
 */
export async function scanPositions(s: Session, afterSeq: number, lastSeq: number, positions: PositionMap): Promise<{ read: number; lastId: string | undefined }> {
  let read = 0;
  let lastId: string | undefined;
  if (lastSeq <= afterSeq) return { read, lastId };
  const each = (m: JsMsg): { seq: number; time: number; position: string | undefined; id: string | undefined } => ({
    seq: m.seq,
    time: Number(m.timestampNanos / 1_000_000n),
    position: m.headers?.get(POSITION_HEADER) || undefined,
    id: m.headers?.get(ID_HEADER) || undefined,
  });
  for await (const batch of readMessages(s, { headersOnly: true, from: { seq: afterSeq + 1 }, until: { seq: lastSeq } }, each)) {
    for (const r of batch) {
      const p = r.position === undefined ? undefined : parsePosition(r.position);
      if (p) advance(positions, p);
    }
    read += batch.length;
    lastId = batch.at(-1)?.id;
  }
  return { read, lastId };
}

/** What verify needs of a record beyond its bytes: the checksum stored with it, when there is one. */
interface CheckedRecord extends LogRecord {
  crc: string | undefined;
}

/**
 * Every record from the first: sequence numbers without gaps, positions that parse, non-empty events,
 * and the CRC-32C of the bytes where the record carries one (records appended before checksums were
 * stored are counted as unchecked, not as bad).
 */
export async function verifyStream(s: Session): Promise<VerifyResult> {
  const info = await s.infoOrFail();
  metaOf(s.location, info);
  const expected = info.state.messages;
  let count = 0;
  let unchecked = 0;
  let next = info.state.first_seq;
  const each = (m: JsMsg): CheckedRecord => ({ ...recordOf(m), crc: m.headers?.get(CRC_HEADER) || undefined });
  for await (const batch of readMessages(s, {}, each)) {
    for (const r of batch) {
      let bad: string | undefined;
      if (r.seq !== next) bad = `sequence ${r.seq} where ${next} was expected (records deleted from the stream)`;
      else if (r.bytes.length === 0) bad = 'an empty event';
      else if (r.position !== undefined && parsePosition(r.position) === undefined) bad = `a position header that does not parse (${r.position.slice(0, 80)})`;
      else if (r.crc === undefined) unchecked++;
      else {
        const actual = crc32c(r.bytes).toString(16).padStart(8, '0');
        if (r.crc.toLowerCase() !== actual) bad = `checksum mismatch: the event's bytes give CRC-32C ${actual}, the record's ${CRC_HEADER} header says ${r.crc.slice(0, 16)}`;
      }
      if (bad) return { ok: false, count, unchecked, firstBad: { seq: r.seq, offset: -1, reason: bad, where: `stream sequence ${r.seq}` } };
      count++;
      next++;
    }
  }
  if (count !== expected) {
    return { ok: false, count, unchecked, firstBad: { seq: next, offset: -1, reason: `the stream reports ${expected} records, ${count} were read`, where: `stream sequence ${next}` } };
  }
  return { ok: true, count, unchecked };
}
