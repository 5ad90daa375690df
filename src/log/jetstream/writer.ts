/**
 * Appending to a JetStream log.
 *
 * - Each message carries its source position in the `Cqp-Position` header and a `Nats-Msg-Id` made
 *   from it, so the server drops an append it already holds; the writer learns the positions the
 *   stream holds when it starts (from the positions checkpoint and the headers after it), and the sink
 *   skips what the log already has. Each message also carries the CRC-32C of its event's bytes.
 * - Each publish expects the stream's last sequence to be the one the writer last saw, so two writers'
 *   appends can never interleave; and one writer at a time holds the log's lease (`lease.ts`).
 * - A failed publish (the connection dropped, a timeout) is retried with backoff: the writer first
 *   reads what the stream got past its last acknowledged record (its own appends, by their ids) and
 *   sends the rest. A batch is acknowledged only when every record of it is stored; the checkpoint is
 *   noted after that, so it never covers a record the stream might not hold.
 */
import { randomBytes } from 'node:crypto';
import { headers as natsHeaders } from '@nats-io/transport-node';
import type { PubAck } from '@nats-io/jetstream';
import { backoffMs, sleep } from '../../core/backoff.js';
import { CqpError, messageOf } from '../../core/errors.js';
import { advance, formatPosition, parsePosition, type PositionMap } from '../../core/position.js';
import type { OpenWriterOptions } from '../command-log.js';
import { crc32c } from '../crc32c.js';
import type { AppendItem, LogWriter } from '../writer.js';
import { CheckpointKeeper, positionsHeld } from './checkpoint.js';
import { Lease } from './lease.js';
import { CRC_HEADER, ID_HEADER, metaOf, partitionSubject, POSITION_HEADER, REQUEST_TIMEOUT_MS, Session, type NatsLocation, type StreamMeta } from './stream.js';

/** FNV-1a over the key's UTF-16 code units: the same key always lands in the same partition. */
export function partitionOf(key: string, partitions: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) % partitions;
}

/** The entity key of an event: `header.rel.id`, else `id` (as text), or undefined. */
function entityKey(bytes: Buffer): string | undefined {
  try {
    const e = JSON.parse(bytes.toString('utf8')) as Record<string, unknown>;
    const rel = (e.header as Record<string, unknown> | undefined)?.rel as Record<string, unknown> | undefined;
    const key = rel?.id ?? e.id;
    return key === undefined || key === null ? undefined : typeof key === 'string' ? key : JSON.stringify(key);
  } catch {
    return undefined;
  }
}

/** A record on its way to the stream. */
interface Pending {
  id: string;
  subject: string;
  bytes: Buffer;
  position: string | undefined;
}

/**
 * Takes the lease of the log at `location` and opens it for appending, creating the stream when it is
 * missing; the writer owns its own connection, closed with it.
 */
export async function openJetStreamWriter(location: string, where: NatsLocation, options: OpenWriterOptions): Promise<LogWriter> {
  const partitions = options.partitions ?? 1;
  if (!Number.isSafeInteger(partitions) || partitions < 1 || partitions > 1024) {
    throw new CqpError('USAGE', `--partitions ${partitions}: give a whole number from 1 to 1024`);
  }
  const s = await Session.open(location, where, true);
  try {
    const lease = await Lease.take(s);
    try {
      const info = (await s.info()) ?? (await s.createStream(partitions));
      const meta = metaOf(location, info);
      if (options.partitions !== undefined && options.partitions !== meta.partitions) {
        options.warn(`${location}: the log exists with ${meta.partitions} partition(s); --partitions ${options.partitions} applies only when a log is created`);
      }
      const lastSeq = info.state.last_seq;
      const held = await positionsHeld(s, info, meta.logId);
      const checkpoints = await CheckpointKeeper.open(s, options.warn);
      // Headers read past the checkpoint need not be read again by the next start.
      if (held.scanned > 0 && held.lastId !== undefined) checkpoints?.note({ logId: meta.logId, seq: lastSeq, id: held.lastId, positions: held.positions });
      return new JetStreamWriter(s, lease, checkpoints, meta, lastSeq, held.positions, options.warn);
    } catch (error) {
      await lease.release();
      throw error;
    }
  } catch (error) {
    await s.close();
    throw error;
  }
}

class JetStreamWriter implements LogWriter {
  readonly path: string;
  readonly logId: string;
  private readonly stream: string;
  private chain: Promise<unknown> = Promise.resolve();
  private failed: Error | undefined;
  private closed = false;
  private readonly nonce = randomBytes(6).toString('hex');
  private counter = 0;

  constructor(
    private readonly s: Session,
    private readonly lease: Lease,
    private readonly checkpoints: CheckpointKeeper | undefined,
    private readonly meta: StreamMeta,
    public lastSeq: number,
    private readonly positions: PositionMap,
    private readonly warn: (message: string) => void,
  ) {
    this.path = s.location;
    this.stream = s.where.stream;
    this.logId = meta.logId;
  }

  applied(): PositionMap {
    return { ...this.positions };
  }

  appendBatch(items: AppendItem[]): Promise<{ firstSeq: number; lastSeq: number }> {
    const run = this.chain.then(() => this.append(items));
    this.chain = run.catch(() => undefined);
    return run;
  }

  private subjectFor(bytes: Buffer): string {
    const p = this.meta.partitions;
    if (p === 1) return partitionSubject(this.stream, 0);
    const key = entityKey(bytes);
    return partitionSubject(this.stream, key === undefined ? 0 : partitionOf(key, p));
  }

  private async append(items: AppendItem[]): Promise<{ firstSeq: number; lastSeq: number }> {
    if (this.closed) throw new CqpError('IO', `${this.path}: append after close`);
    if (this.failed) throw new CqpError('IO', `${this.path}: an earlier append failed (${this.failed.message}); reopen the log`, { cause: this.failed });
    const firstSeq = this.lastSeq + 1;
    if (items.length === 0) return { firstSeq, lastSeq: this.lastSeq };
    let pending: Pending[] = items.map((item) => {
      const position = item.position ? formatPosition(item.position) : undefined;
      const bytes = typeof item.bytes === 'string' ? Buffer.from(item.bytes) : item.bytes;
      return { id: position ?? `${this.nonce}-${++this.counter}`, subject: this.subjectFor(bytes), bytes, position };
    });
    for (let attempt = 0; ; attempt++) {
      const lost = this.lease.lostReason;
      if (lost) this.fail(new CqpError('LOCKED', `${this.path}: ${lost}; this writer stops, nothing more is appended by it`));
      try {
        await this.publishAll(pending);
        break;
      } catch (error) {
        if (error instanceof CqpError) this.fail(error);
        // Out of reach or too slow: wait, see what the stream got, and send the rest.
        if (attempt === 0 || attempt % 10 === 0) this.warn(`${this.path}: append not acknowledged (${messageOf(error)}); retrying`);
        await sleep(backoffMs(attempt, 200, 5000));
        try {
          pending = await this.resync(pending);
        } catch (e) {
          if (e instanceof CqpError) this.fail(e);
        }
        if (pending.length === 0) break;
      }
    }
    return { firstSeq, lastSeq: this.lastSeq };
  }

  private fail(error: CqpError): never {
    this.failed = error;
    throw error;
  }

  /** Publishes every record, each expecting the one before it as the stream's last; all acknowledged or a throw. */
  private async publishAll(pending: Pending[]): Promise<void> {
    const base = this.lastSeq;
    const acks: Array<Promise<PubAck>> = pending.map((p, i) => {
      const h = natsHeaders();
      if (p.position !== undefined) h.set(POSITION_HEADER, p.position);
      h.set(CRC_HEADER, crc32c(p.bytes).toString(16).padStart(8, '0'));
      return this.s.js.publish(p.subject, p.bytes, {
        msgID: p.id,
        headers: h,
        expect: { lastSequence: base + i },
        timeout: REQUEST_TIMEOUT_MS,
      });
    });
    const settled = await Promise.allSettled(acks);
    let done = 0;
    for (const r of settled) {
      // A "wrong last sequence" is either another writer's append (refused below, by resync) or an
      // earlier record of this batch not stored: resync sorts it out by reading what the stream holds.
      if (r.status === 'rejected') throw r.reason;
      if (r.value.seq !== base + done + 1 && !r.value.duplicate) {
        throw new CqpError('IO', `${this.path}: the stream stored a record at sequence ${r.value.seq} where ${base + done + 1} was expected; another writer?`);
      }
      done++;
    }
    this.commit(pending);
  }

  /** Counts `done` (the next records of the stream, acknowledged) as appended, and notes the checkpoint. */
  private commit(done: Pending[]): void {
    const last = done.at(-1);
    if (!last) return;
    for (const p of done) {
      if (p.position) {
        const pos = parsePosition(p.position);
        if (pos) advance(this.positions, pos);
      }
    }
    this.lastSeq += done.length;
    this.checkpoints?.note({ logId: this.logId, seq: this.lastSeq, id: last.id, positions: this.positions });
  }

  /**
   * After a failed publish: the records the stream holds past `lastSeq` must be the first of
   * `pending` (this writer's, by id); they count as appended, and the rest is returned to send.
   */
  private async resync(pending: Pending[]): Promise<Pending[]> {
    const info = await this.s.jsm.streams.info(this.stream);
    const last = info.state.last_seq;
    if (last <= this.lastSeq) return pending;
    if (last - this.lastSeq > pending.length) {
      throw new CqpError('LOCKED', `${this.path}: the stream holds ${last - this.lastSeq} records this writer did not send; another writer appended. This writer stops`);
    }
    let k = 0;
    for (let seq = this.lastSeq + 1; seq <= last; seq++, k++) {
      const m = await this.s.jsm.streams.getMessage(this.stream, { seq });
      const id = m?.header?.get(ID_HEADER);
      if (id !== pending[k]?.id) {
        throw new CqpError('LOCKED', `${this.path}: record ${seq} of the stream is not one this writer sent; another writer appended. This writer stops`);
      }
    }
    this.commit(pending.slice(0, k));
    return pending.slice(k);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.chain;
    this.closed = true;
    try {
      await this.checkpoints?.flush();
      await this.lease.release();
    } finally {
      await this.s.close();
    }
  }
}
