/**
 * A worker's share of a partitioned JetStream log: the `log` source with `group: NAME`.
 *
 * Every `cqp run` of the group holds a member key (`<stream>.<group>.m.<worker>`) and one lease per
 * partition it reads (`<stream>.<group>.p<k>`), all in the lease bucket (lease.ts), renewed every second
 * and aged out within LEASE_MS when their holder stops. Once a second each worker counts the members and
 * aims at its fair share, ceil(partitions / members): it takes free partitions up to it, and gives back
 * those above it. A partition given back is first no longer read, then its lease is deleted once the
 * sinks have committed the last event read from it (a batch boundary), so the next holder starts where
 * this one ended.
 *
 * Each partition is a source of its own, `log:<logId>/p<k>`, stamped with the stream sequence: the
 * sinks hold one position per partition. A partition taken is read from the position its sinks hold,
 * that event included (the sinks skip it): the first event a sink then sees of it is the one it holds
 * (or a later one, when a stage dropped it), which tells it that this reader starts where the stored
 * positions stand. A reader whose lease was taken meanwhile (it was paused past the lease) goes on
 * from where it was instead, before the stored position, and the sinks refuse such a batch once another
 * worker has committed for that partition (the fence, in the sink's store).
 */
import { hostname } from 'node:os';
import type { KV } from '@nats-io/kv';
import { sleep } from '../../core/backoff.js';
import { CqpError, messageOf } from '../../core/errors.js';
import { compareN, resumeAt, type PositionMap } from '../../core/position.js';
import type { ShareReadOptions } from '../command-log.js';
import type { LogEvent } from '../input.js';
import { heldByLive, KeyLease, openLeaseBucket } from './lease.js';
import { readRecords } from './reader.js';
import { metaOf, parseNatsLocation, Session } from './stream.js';

/** How often a worker renews its view of the group: lost leases, members, its fair share. */
const TICK_MS = 1000;
/** Records read ahead of the output, across partitions, before the readers wait. */
const MAX_QUEUED = 16_384;
/** How long a partition given back waits for the sinks to commit what was read from it. */
const RELEASE_WAIT_MS = 10_000;

/** The source name of partition `k` of log `logId`: the sinks keep one position per partition. */
export function partitionSource(logId: string, k: number): string {
  return `log:${logId}/p${k}`;
}

/** What reading a share needs: the log, the group, where the sinks stood at start, and the supervisor. */
export interface GroupReadOptions extends ShareReadOptions {
  location: string;
}

interface Held {
  lease: KeyLease;
  stop: AbortController;
  /** The position of the last event handed on from this partition. */
  last: string | undefined;
  reading: Promise<void>;
}

interface Queued {
  k: number;
  /** The tenure it was read under: a partition lost or given back and taken again is another one. */
  h: Held;
  events: LogEvent[];
}

/** Reads this worker's share of the group's partitions, in order within each, until `signal`. */
export async function* readGroupShare(o: GroupReadOptions): AsyncGenerator<LogEvent[]> {
  const where = parseNatsLocation(o.location);
  const s = await Session.open(o.location, where);
  let share: Share | undefined;
  try {
    let info = await s.info();
    while (!info) {
      if (!(await sleep(500, o.signal))) return;
      info = await s.info();
    }
    const { logId, partitions } = metaOf(o.location, info);
    const kv = await openLeaseBucket(s);
    share = new Share(s, kv, o, logId, partitions);
    await share.join();
    let nextTick = 0;
    while (!o.signal.aborted) {
      if (Date.now() >= nextTick) {
        await share.balance();
        nextTick = Date.now() + TICK_MS;
      }
      const item = await share.next(nextTick - Date.now());
      if (item) yield item;
    }
  } finally {
    await share?.leave();
    await s.close();
  }
}

class Share {
  private readonly held = new Map<number, Held>();
  private readonly releasing = new Set<number>();
  private member: KeyLease | undefined;
  private readonly prefix: string;
  private queue: Queued[] = [];
  private queued = 0;
  private wake: (() => void) | undefined;
  private room: Array<() => void> = [];
  private failure: unknown;
  private shown: string | undefined;

  constructor(
    private readonly s: Session,
    private readonly kv: KV,
    private readonly o: GroupReadOptions,
    private readonly logId: string,
    private readonly partitions: number,
  ) {
    this.prefix = `${s.where.stream}.${o.group}`;
  }

  private log(message: string): void {
    this.o.warn(`group ${this.o.group}: ${message}`);
  }

  async join(): Promise<void> {
    const id = `${hostname()}-${process.pid}`.replace(/[^A-Za-z0-9_-]/g, '_');
    const got = await KeyLease.tryTake(this.kv, `${this.prefix}.m.${id}`);
    if (!(got instanceof KeyLease)) throw new CqpError('LOCKED', `${this.s.location}: group ${this.o.group}: this worker's key is held by ${got.heldBy}`);
    this.member = got;
  }

  private async members(): Promise<number> {
    const keys: string[] = [];
    for await (const key of await this.kv.keys(`${this.prefix}.m.*`)) if (key) keys.push(key);
    let n = 0;
    for (const key of keys) if (await heldByLive(this.kv, key)) n++;
    return Math.max(1, n);
  }

  /** Drops lost partitions, then takes or gives back partitions towards the fair share. */
  async balance(): Promise<void> {
    if (this.failure !== undefined) throw this.failure;
    let fair: number;
    try {
      fair = Math.ceil(this.partitions / (await this.members()));
    } catch (error) {
      this.log(`cannot read the group's members (${messageOf(error)}); keeping the partitions held`);
      return;
    }
    const held = [...this.held.keys()].sort((a, b) => b - a);
    for (const k of held.slice(0, Math.max(0, held.length - fair))) void this.release(k);
    for (let k = 0; k < this.partitions && this.held.size < fair; k++) {
      if (this.held.has(k) || this.releasing.has(k)) continue;
      const got = await KeyLease.tryTake(this.kv, `${this.prefix}.p${k}`).catch(() => undefined);
      if (got instanceof KeyLease) await this.start(k, got);
    }
    this.show();
  }

  private show(): void {
    const now = [...this.held.keys()].sort((a, b) => a - b);
    const text = now.join(',');
    if (text !== this.shown) {
      this.shown = text;
      this.o.worker?.holding(this.o.group, now);
    }
  }

  /** Starts reading partition `k` (its lease just taken) from the position the sinks hold. */
  private async start(k: number, lease: KeyLease): Promise<void> {
    const source = partitionSource(this.logId, k);
    let at: PositionMap | undefined = this.o.resume;
    try {
      if (this.o.worker) at = await this.o.worker.sinksAt();
    } catch (error) {
      await lease.release();
      this.log(`cannot read where the sinks stand (${messageOf(error)}); partition ${k} left for later`);
      return;
    }
    const n = at?.[source];
    // Views built by a reader of the whole log (a replay, or before the group) hold its position instead.
    const whole = at?.[`log:${this.logId}`];
    const base = (p: string): number => Number(p.split('.')[0]);
    let from: { seq: number } | undefined;
    let where = n === undefined ? 'from its start' : `from ${n}, where the sinks stand`;
    if (whole !== undefined && (n === undefined || base(whole) > base(n))) {
      const next = resumeAt(whole);
      from = { seq: Number(next.n) + (next.inclusive ? 0 : 1) };
      where = `after ${whole}, where the sinks stand in the whole log`;
    } else if (n !== undefined) {
      // The held event again (its sub-events too): the sinks skip it, and see where this reader starts.
      from = { seq: base(n) };
    }
    const stop = new AbortController();
    const h: Held = { lease, stop, last: undefined, reading: Promise.resolve() };
    lease.onLost = (reason) => this.lose(k, h, reason);
    this.held.set(k, h);
    h.reading = (async () => {
      try {
        for await (const records of readRecords(this.s, { from, follow: true, signal: stop.signal, partition: k })) {
          if (stop.signal.aborted) break;
          const events: LogEvent[] = new Array<LogEvent>(records.length);
          for (let i = 0; i < records.length; i++) {
            const r = records[i] as (typeof records)[number];
            events[i] = { text: r.bytes.toString('utf8'), position: { source, n: String(r.seq) } };
          }
          await this.push({ k, h, events });
        }
      } catch (error) {
        if (!stop.signal.aborted) this.failure ??= error;
        this.poke();
      }
    })();
    this.log(`took partition ${k} (${where})`);
  }

  private lose(k: number, h: Held, reason: string): void {
    if (this.held.get(k) !== h) return;
    this.held.delete(k);
    this.drop(k, h);
    this.log(`lost partition ${k} (${reason}); nothing more of it is handed on by this worker`);
    this.show();
  }

  private drop(k: number, h: Held): void {
    h.stop.abort();
    const kept = this.queue.filter((q) => q.k !== k);
    for (const q of this.queue) if (q.k === k) this.queued -= q.events.length;
    this.queue = kept;
    this.freeRoom();
  }

  /** Gives partition `k` back: stops reading it, waits for the sinks to commit what was handed on, frees its lease. */
  private async release(k: number, quiet = false): Promise<void> {
    const h = this.held.get(k);
    if (!h) return;
    this.held.delete(k);
    this.releasing.add(k);
    this.drop(k, h);
    this.show();
    try {
      // Its reader was stopped; nothing it still reads is handed on, so it is not waited for long.
      await Promise.race([h.reading, sleep(RELEASE_WAIT_MS)]);
      if (h.last !== undefined && !(await this.committed(partitionSource(this.logId, k), h.last))) {
        this.log(`partition ${k}: the sinks did not commit up to ${h.last} within ${RELEASE_WAIT_MS / 1000} s; giving it back all the same`);
      }
      await h.lease.release();
      if (!quiet) this.log(`released partition ${k}`);
    } finally {
      this.releasing.delete(k);
    }
  }

  /** Waits until the sinks hold `last` of `source` (true), or RELEASE_WAIT_MS; true at once without a supervisor to ask. */
  private async committed(source: string, last: string): Promise<boolean> {
    const worker = this.o.worker;
    if (!worker) return true;
    const until = Date.now() + RELEASE_WAIT_MS;
    while (Date.now() < until) {
      const at = await worker.sinksAt().catch(() => undefined);
      if (at === undefined) return true;
      const n = at[source];
      if (n !== undefined && compareN(n, last) >= 0) return true;
      await sleep(200);
    }
    return false;
  }

  private async push(item: Queued): Promise<void> {
    while (this.queued >= MAX_QUEUED) await new Promise<void>((resolve) => this.room.push(resolve));
    // Read before its partition was lost or given back (maybe taken again since): never handed on.
    if (this.held.get(item.k) !== item.h || item.h.stop.signal.aborted) return;
    this.queue.push(item);
    this.queued += item.events.length;
    this.poke();
  }

  private poke(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  private freeRoom(): void {
    const r = this.room;
    this.room = [];
    for (const f of r) f();
  }

  /** The next batch read from a partition still held, waiting at most `ms`. */
  async next(ms: number): Promise<LogEvent[] | undefined> {
    if (this.queue.length === 0 && ms > 0 && !this.o.signal.aborted) {
      await new Promise<void>((resolve) => {
        const done = (): void => {
          clearTimeout(timer);
          this.o.signal.removeEventListener('abort', done);
          resolve();
        };
        const timer = setTimeout(done, ms);
        this.o.signal.addEventListener('abort', done, { once: true });
        this.wake = done;
      });
      this.wake = undefined;
    }
    if (this.failure !== undefined) throw new CqpError('IO', `${this.s.location}: reading a partition failed (${messageOf(this.failure)})`, { cause: this.failure });
    const item = this.queue.shift();
    if (!item) return undefined;
    this.queued -= item.events.length;
    this.freeRoom();
    const h = item.h;
    if (this.held.get(item.k) !== h || h.stop.signal.aborted || this.o.signal.aborted) return undefined;
    h.last = item.events.at(-1)?.position.n ?? h.last;
    return item.events;
  }

  /** Gives every partition back (after the sinks committed what was handed on) and leaves the group. */
  async leave(): Promise<void> {
    const ks = [...this.held.keys()];
    await Promise.all(ks.map((k) => this.release(k, true)));
    if (ks.length > 0) this.log(`released partitions ${ks.sort((a, b) => a - b).join(', ')} on the way out`);
    await this.member?.release();
  }
}
