/**
 * The command log kept in a NATS JetStream stream (`nats://HOST:PORT/STREAM`), behind `CommandLog`.
 *
 * - The stream is created by the first writer: file storage, limits retention (nothing is removed on
 *   ack), subjects `cqp.<STREAM>.<partition>`, and a description naming it a cqp log with its id and
 *   partition count. With N partitions an event goes to partition hash(entity key) mod N; the stream
 *   sequence orders the whole log, and is the record's sequence number. The append time is the
 *   message's time.
 * - Each message carries its source position in the `Cqp-Position` header and a `Nats-Msg-Id` made
 *   from it, so the server drops an append it already holds; the writer reads the positions the stream
 *   holds when it starts, and the sink skips what the log already has.
 * - Each publish expects the stream's last sequence to be the one the writer last saw, so two writers'
 *   appends can never interleave; and one writer at a time holds the log's lease (a key in the
 *   `cqp_log_leases` bucket, kept by compare-and-set on its revision and renewed every second). A
 *   writer that dies stops renewing and the key ages out within LEASE_MS.
 * - A failed publish (the connection dropped, a timeout) is retried with backoff: the writer first
 *   reads what the stream got past its last acknowledged record (its own appends, by their ids) and
 *   sends the rest. A batch is acknowledged only when every record of it is stored.
 */
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { connect, headers as natsHeaders, type NatsConnection } from '@nats-io/transport-node';
import {
  DeliverPolicy,
  DiscardPolicy,
  jetstream,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  type OrderedConsumerOptions,
  type PubAck,
  type StreamInfo,
} from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import { backoffMs, sleep } from '../core/backoff.js';
import { CqpError, messageOf } from '../core/errors.js';
import { advance, formatPosition, parsePosition, type PositionMap } from '../core/position.js';
import type { CommandLog, LogTailInfo, OpenWriterOptions } from './command-log.js';
import type { LogRecord } from './format.js';
import type { ReadLogOptions } from './reader.js';
import type { LogStat, VerifyResult } from './tools.js';
import type { AppendItem, LogWriter } from './writer.js';

const POSITION_HEADER = 'Cqp-Position';
const ID_HEADER = 'Nats-Msg-Id';
const DESCRIPTION = /^cqp command log id=([0-9a-f]{32}) partitions=(\d+)$/;
const LEASE_BUCKET = 'cqp_log_leases';
/** How long a lease lasts without renewal: a dead writer's lapses within this. */
export const LEASE_MS = 5000;
const RENEW_MS = 1000;
/** How long one publish waits for its acknowledgement before the writer retries. */
const PUBLISH_TIMEOUT_MS = 5000;
/** Largest batch of records a reader yields at once. */
const READ_BATCH = 4096;

/** The parts of a `nats://HOST:PORT/STREAM` location. */
export interface NatsLocation {
  servers: string;
  stream: string;
}

export function parseNatsLocation(location: string): NatsLocation {
  let url: URL;
  try {
    url = new URL(location);
  } catch {
    throw new CqpError('USAGE', `${location}: not a valid URL; a JetStream log is nats://HOST:PORT/STREAM, e.g. nats://127.0.0.1:4222/events`);
  }
  const stream = decodeURIComponent(url.pathname.replace(/^\//, ''));
  if (!/^[A-Za-z0-9_-]+$/.test(stream)) {
    throw new CqpError(
      'USAGE',
      `${location}: ${stream === '' ? 'no stream name' : `"${stream}" is not a stream name (letters, digits, _ and - only)`}; a JetStream log is nats://HOST:PORT/STREAM, e.g. nats://127.0.0.1:4222/events`,
    );
  }
  return { servers: `${url.hostname}:${url.port || '4222'}`, stream };
}

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
function entityKey(bytes: Buffer | string): string | undefined {
  try {
    const e = JSON.parse(typeof bytes === 'string' ? bytes : bytes.toString('utf8')) as Record<string, unknown>;
    const rel = (e.header as Record<string, unknown> | undefined)?.rel as Record<string, unknown> | undefined;
    const key = rel?.id ?? e.id;
    return key === undefined || key === null ? undefined : typeof key === 'string' ? key : JSON.stringify(key);
  } catch {
    return undefined;
  }
}

function msOf(m: JsMsg): number {
  return Number(m.timestampNanos / 1_000_000n);
}

function recordOf(m: JsMsg): LogRecord {
  const rec: LogRecord = { seq: m.seq, time: msOf(m), bytes: Buffer.from(m.data.buffer, m.data.byteOffset, m.data.byteLength) };
  const pos = m.headers?.get(POSITION_HEADER);
  if (pos) rec.position = pos;
  return rec;
}

function isNotFound(error: unknown): boolean {
  const e = error as { code?: number; api_error?: { code?: number; err_code?: number }; name?: string };
  return e?.name === 'StreamNotFoundError' || e?.api_error?.err_code === 10059 || e?.api_error?.code === 404 || /stream not found/i.test(messageOf(error));
}

async function connectTo(location: string, servers: string, forWriting: boolean): Promise<NatsConnection> {
  try {
    return await connect({
      servers,
      name: forWriting ? 'cqp log writer' : 'cqp log reader',
      // While running, a dropped connection is reconnected for as long as it takes; the writer's
      // appends wait and retry meanwhile.
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
      timeout: 3000,
    });
  } catch (error) {
    throw new CqpError('IO', `${location}: cannot reach the NATS server at ${servers} (${messageOf(error)}); check that it runs with JetStream enabled`, {
      cause: error,
    });
  }
}

interface StreamMeta {
  logId: string;
  partitions: number;
}

function metaOf(location: string, info: StreamInfo): StreamMeta {
  const m = DESCRIPTION.exec(info.config.description ?? '');
  if (!m) {
    throw new CqpError('CONFIG', `${location}: stream ${info.config.name} exists but is not a cqp command log (it was not created by cqp); give another stream name`);
  }
  return { logId: m[1] as string, partitions: Number(m[2]) };
}

/** A connection to the server, with JetStream, closed by `close()`. */
class Session {
  private constructor(
    readonly nc: NatsConnection,
    readonly js: JetStreamClient,
    readonly jsm: JetStreamManager,
  ) {}

  static async open(location: string, servers: string, forWriting = false): Promise<Session> {
    const nc = await connectTo(location, servers, forWriting);
    try {
      const jsm = await jetstreamManager(nc, { timeout: PUBLISH_TIMEOUT_MS });
      return new Session(nc, jetstream(nc, { timeout: PUBLISH_TIMEOUT_MS }), jsm);
    } catch (error) {
      await nc.close().catch(() => undefined);
      throw new CqpError('IO', `${location}: the NATS server at ${servers} has no JetStream (${messageOf(error)}); start it with -js`, { cause: error });
    }
  }

  async close(): Promise<void> {
    await this.nc.close().catch(() => undefined);
  }
}

export class JetStreamCommandLog implements CommandLog {
  private readonly where: NatsLocation;

  constructor(readonly location: string) {
    this.where = parseNatsLocation(location);
  }

  private async with<T>(fn: (s: Session) => Promise<T>): Promise<T> {
    const session = await Session.open(this.location, this.where.servers);
    try {
      return await fn(session);
    } finally {
      await session.close();
    }
  }

  /** The stream's info, or undefined when it does not exist. */
  private async info(s: Session): Promise<StreamInfo | undefined> {
    try {
      return await s.jsm.streams.info(this.where.stream);
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw new CqpError('IO', `${this.location}: cannot read the stream (${messageOf(error)})`, { cause: error });
    }
  }

  private async infoOrFail(s: Session): Promise<StreamInfo> {
    const info = await this.info(s);
    if (!info) throw new CqpError('IO', `${this.location}: no such stream on ${this.where.servers} (a log is created by \`cqp-sink log --path ${this.location}\`)`);
    return info;
  }

  exists(): Promise<boolean> {
    return this.with(async (s) => (await this.info(s)) !== undefined);
  }

  async waitFor(signal?: AbortSignal): Promise<boolean> {
    let session: Session | undefined;
    try {
      for (let attempt = 0; ; attempt++) {
        if (signal?.aborted) return false;
        try {
          session ??= await Session.open(this.location, this.where.servers);
          const info = await this.info(session);
          if (info) {
            metaOf(this.location, info);
            return true;
          }
        } catch (error) {
          if (error instanceof CqpError && error.code === 'CONFIG') throw error;
          // Unreachable for now: keep waiting, as for a log not yet created.
          await session?.close();
          session = undefined;
        }
        if (!(await sleep(Math.min(200 + attempt * 50, 1000), signal))) return false;
      }
    } finally {
      await session?.close();
    }
  }

  logId(): Promise<string> {
    return this.with(async (s) => metaOf(this.location, await this.infoOrFail(s)).logId);
  }

  /** The positions the stream holds, read from the headers of every record. */
  private async positionsIn(s: Session, lastSeq: number): Promise<PositionMap> {
    const positions: PositionMap = {};
    if (lastSeq === 0) return positions;
    for await (const batch of this.readWith(s, { headersOnly: true, until: { seq: lastSeq } })) {
      for (const r of batch) {
        const p = r.position === undefined ? undefined : parsePosition(r.position);
        if (p) advance(positions, p);
      }
    }
    return positions;
  }

  private lastTime(info: StreamInfo): number {
    return info.state.messages === 0 ? 0 : Date.parse(info.state.last_ts);
  }

  tail(): Promise<LogTailInfo> {
    return this.with(async (s) => {
      const info = await this.infoOrFail(s);
      const { logId } = metaOf(this.location, info);
      const lastSeq = info.state.last_seq;
      return { logId, lastSeq, lastTime: this.lastTime(info), positions: await this.positionsIn(s, lastSeq) };
    });
  }

  async *read(options: ReadLogOptions = {}): AsyncGenerator<LogRecord[]> {
    if (options.follow && !(await this.waitFor(options.signal))) return;
    const session = await Session.open(this.location, this.where.servers);
    try {
      yield* this.readWith(session, options);
    } finally {
      await session.close();
    }
  }

  private async *readWith(s: Session, options: ReadLogOptions & { headersOnly?: boolean }): AsyncGenerator<LogRecord[]> {
    const { from, until, follow = false, signal } = options;
    const info = await this.infoOrFail(s);
    metaOf(this.location, info);
    const endSeq = follow ? Number.POSITIVE_INFINITY : info.state.last_seq;
    const untilSeq = until && 'seq' in until ? until.seq : Number.POSITIVE_INFINITY;
    const stopSeq = Math.min(endSeq, untilSeq);
    const firstSeq = Math.max(info.state.first_seq, 1);
    if (stopSeq < firstSeq || (from && 'seq' in from && from.seq > stopSeq)) return;
    if (!follow && info.state.messages === 0) return;
    if (!follow && from && 'time' in from && Date.parse(info.state.last_ts) < from.time) return;
    const opts: Partial<OrderedConsumerOptions> = { headers_only: options.headersOnly === true };
    if (from && 'seq' in from && from.seq > firstSeq) Object.assign(opts, { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: from.seq });
    else if (from && 'time' in from) Object.assign(opts, { deliver_policy: DeliverPolicy.StartTime, opt_start_time: new Date(from.time).toISOString() });
    else Object.assign(opts, { deliver_policy: DeliverPolicy.All });
    const consumer = await s.js.consumers.get(this.where.stream, opts);
    const messages = await consumer.consume({ max_messages: READ_BATCH });
    const queue: LogRecord[] = [];
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
          queue.push(recordOf(m));
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
          if (failure) throw new CqpError('IO', `${this.location}: reading the stream failed (${messageOf(failure)})`, { cause: failure });
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

  async openWriter(options: OpenWriterOptions): Promise<LogWriter> {
    const partitions = options.partitions ?? 1;
    if (!Number.isSafeInteger(partitions) || partitions < 1 || partitions > 1024) {
      throw new CqpError('USAGE', `--partitions ${partitions}: give a whole number from 1 to 1024`);
    }
    const s = await Session.open(this.location, this.where.servers, true);
    try {
      const lease = await Lease.take(s, this.location, this.where.stream);
      try {
        let info = await this.info(s);
        if (!info) info = await this.create(s, partitions);
        const meta = metaOf(this.location, info);
        if (options.partitions !== undefined && options.partitions !== meta.partitions) {
          options.warn(`${this.location}: the log exists with ${meta.partitions} partition(s); --partitions ${options.partitions} applies only when a log is created`);
        }
        const lastSeq = info.state.last_seq;
        const positions = await this.positionsIn(s, lastSeq);
        return new JetStreamWriter(this.location, this.where.stream, s, lease, meta, lastSeq, positions, options.warn);
      } catch (error) {
        await lease.release();
        throw error;
      }
    } catch (error) {
      await s.close();
      throw error;
    }
  }

  private async create(s: Session, partitions: number): Promise<StreamInfo> {
    const name = this.where.stream;
    try {
      return await s.jsm.streams.add({
        name,
        description: `cqp command log id=${randomBytes(16).toString('hex')} partitions=${partitions}`,
        subjects: [`cqp.${name}.*`],
        storage: StorageType.File,
        retention: RetentionPolicy.Limits,
        discard: DiscardPolicy.Old,
        max_msgs: -1,
        max_bytes: -1,
        max_age: 0,
        // Appends resent after a lost acknowledgement are recognised by their ids for this long.
        duplicate_window: 10 * 60 * 1_000_000_000,
      });
    } catch (error) {
      throw new CqpError('IO', `${this.location}: cannot create the stream (${messageOf(error)})`, { cause: error });
    }
  }

  stat(): Promise<LogStat> {
    return this.with(async (s) => {
      const info = await this.infoOrFail(s);
      const meta = metaOf(this.location, info);
      const st = info.state;
      const some = st.messages > 0;
      return {
        path: this.location,
        logId: meta.logId,
        count: st.messages,
        firstSeq: some ? st.first_seq : undefined,
        lastSeq: some ? st.last_seq : undefined,
        firstTime: some ? Date.parse(st.first_ts) : undefined,
        lastTime: some ? Date.parse(st.last_ts) : undefined,
        size: st.bytes,
        partitions: meta.partitions,
        positions: await this.positionsIn(s, st.last_seq),
      };
    });
  }

  /** Every record from the first: sequence numbers without gaps, positions that parse, non-empty events. */
  verify(): Promise<VerifyResult> {
    return this.with(async (s) => {
      const info = await this.infoOrFail(s);
      metaOf(this.location, info);
      const expected = info.state.messages;
      let count = 0;
      let next = info.state.first_seq;
      for await (const batch of this.readWith(s, {})) {
        for (const r of batch) {
          const bad =
            r.seq !== next
              ? `sequence ${r.seq} where ${next} was expected (records deleted from the stream)`
              : r.bytes.length === 0
                ? 'an empty event'
                : r.position !== undefined && parsePosition(r.position) === undefined
                  ? `a position header that does not parse (${r.position.slice(0, 80)})`
                  : undefined;
          if (bad) return { ok: false, count, firstBad: { seq: r.seq, offset: -1, reason: bad, where: `stream sequence ${r.seq}` } };
          count++;
          next++;
        }
      }
      if (count !== expected) {
        return { ok: false, count, firstBad: { seq: next, offset: -1, reason: `the stream reports ${expected} records, ${count} were read`, where: `stream sequence ${next}` } };
      }
      return { ok: true, count };
    });
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
  // A killed process not yet reaped by its parent (a zombie) still answers signal 0.
  try {
    return !/^\d+ \(.*\) Z/s.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return true;
  }
}

/** The log's single-writer lease: a key in a bucket whose entries age out unless renewed. */
class Lease {
  private timer: NodeJS.Timeout | undefined;
  private lost: string | undefined;

  private constructor(
    private readonly kv: KV,
    private readonly key: string,
    private readonly value: string,
    private revision: number,
    private readonly location: string,
  ) {
    this.timer = setInterval(() => void this.renew(), RENEW_MS);
    this.timer.unref();
  }

  static async take(s: Session, location: string, stream: string): Promise<Lease> {
    let kv: KV;
    try {
      kv = await new Kvm(s.js).create(LEASE_BUCKET, { ttl: LEASE_MS, history: 1 });
    } catch (error) {
      throw new CqpError('IO', `${location}: cannot open the lease bucket ${LEASE_BUCKET} (${messageOf(error)})`, { cause: error });
    }
    const holder = `${hostname()} pid ${process.pid}`;
    const value = JSON.stringify({ holder, host: hostname(), pid: process.pid, since: new Date().toISOString() });
    for (let attempt = 0; ; attempt++) {
      try {
        const revision = await kv.create(stream, value);
        return new Lease(kv, stream, value, revision, location);
      } catch (error) {
        const entry = await kv.get(stream).catch(() => null);
        if (!entry || entry.operation !== 'PUT') {
          if (attempt < 3) continue;
          throw new CqpError('IO', `${location}: cannot take the log's lease (${messageOf(error)})`, { cause: error });
        }
        let who = entry.string();
        let dead = false;
        try {
          const v = JSON.parse(who) as { holder?: string; since?: string; host?: string; pid?: number };
          who = `${v.holder ?? '?'}, since ${v.since ?? '?'}`;
          // A holder on this machine whose process is gone (killed) need not be waited for.
          dead = v.host === hostname() && typeof v.pid === 'number' && v.pid !== process.pid && !alive(v.pid);
        } catch {
          // Shown as stored.
        }
        if (dead && attempt < 3) {
          await kv.delete(stream, { previousSeq: entry.revision }).catch(() => undefined);
          continue;
        }
        throw new CqpError(
          'LOCKED',
          `${location}: another writer holds this log (${who}); one writer at a time. If that writer has died, its lease lapses within ${LEASE_MS / 1000} s`,
        );
      }
    }
  }

  /** Why the lease was lost, when it was. */
  get lostReason(): string | undefined {
    return this.lost;
  }

  private renewing = false;

  async renew(): Promise<void> {
    if (this.renewing || this.lost) return;
    this.renewing = true;
    try {
      this.revision = await this.kv.update(this.key, this.value, this.revision);
    } catch (error) {
      const entry = await this.kv.get(this.key).catch(() => undefined);
      if (entry === null || (entry && entry.operation !== 'PUT')) {
        // Lapsed while the server was out of reach, and nobody took it: take it again. The appends'
        // expected last sequence still refuses anything written meanwhile by another writer.
        this.revision = await this.kv.create(this.key, this.value).catch(() => this.revision);
      } else if (entry && entry.revision !== this.revision) {
        this.lost = `another writer took the log's lease (${entry.string()})`;
      }
      // Otherwise the server is out of reach: try again at the next tick.
      void error;
    } finally {
      this.renewing = false;
    }
  }

  async release(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    if (this.lost) return;
    await this.kv.delete(this.key, { previousSeq: this.revision }).catch(() => undefined);
  }
}

interface Pending {
  id: string;
  subject: string;
  bytes: Buffer | string;
  position: string | undefined;
}

class JetStreamWriter implements LogWriter {
  readonly logId: string;
  private chain: Promise<unknown> = Promise.resolve();
  private failed: Error | undefined;
  private closed = false;
  private readonly nonce = randomBytes(6).toString('hex');
  private counter = 0;

  constructor(
    readonly path: string,
    private readonly stream: string,
    private readonly s: Session,
    private readonly lease: Lease,
    private readonly meta: StreamMeta,
    public lastSeq: number,
    private readonly positions: PositionMap,
    private readonly warn: (message: string) => void,
  ) {
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

  private subjectFor(bytes: Buffer | string): string {
    const p = this.meta.partitions;
    if (p === 1) return `cqp.${this.stream}.0`;
    const key = entityKey(bytes);
    return `cqp.${this.stream}.${key === undefined ? 0 : partitionOf(key, p)}`;
  }

  private async append(items: AppendItem[]): Promise<{ firstSeq: number; lastSeq: number }> {
    if (this.closed) throw new CqpError('IO', `${this.path}: append after close`);
    if (this.failed) throw new CqpError('IO', `${this.path}: an earlier append failed (${this.failed.message}); reopen the log`, { cause: this.failed });
    const firstSeq = this.lastSeq + 1;
    if (items.length === 0) return { firstSeq, lastSeq: this.lastSeq };
    let pending: Pending[] = items.map((item) => {
      const position = item.position ? formatPosition(item.position) : undefined;
      return { id: position ?? `${this.nonce}-${++this.counter}`, subject: this.subjectFor(item.bytes), bytes: item.bytes, position };
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
      return this.s.js.publish(p.subject, typeof p.bytes === 'string' ? Buffer.from(p.bytes) : p.bytes, {
        msgID: p.id,
        headers: h,
        expect: { lastSequence: base + i },
        timeout: PUBLISH_TIMEOUT_MS,
      });
    });
    const settled = await Promise.allSettled(acks);
    let done = 0;
    for (const r of settled) {
      if (r.status === 'rejected') {
        const msg = messageOf(r.reason);
        if (/wrong last sequence/i.test(msg)) {
          // Either another writer appended (refused below, by resync), or an earlier record of this
          // batch was not stored: sort it out by reading what the stream holds.
          throw r.reason;
        }
        throw r.reason;
      }
      if (r.value.seq !== base + done + 1 && !r.value.duplicate) {
        throw new CqpError('IO', `${this.path}: the stream stored a record at sequence ${r.value.seq} where ${base + done + 1} was expected; another writer?`);
      }
      done++;
    }
    this.commit(pending);
  }

  private commit(done: Pending[]): void {
    for (const p of done) {
      if (p.position) {
        const pos = parsePosition(p.position);
        if (pos) advance(this.positions, pos);
      }
    }
    this.lastSeq += done.length;
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
      await this.lease.release();
    } finally {
      await this.s.close();
    }
  }
}
