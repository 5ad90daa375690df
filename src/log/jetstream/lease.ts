/**
 * One writer at a time on a JetStream log: the writer holds a key named after the stream in the
 * `cqp_log_leases` bucket, kept by compare-and-set on its revision and renewed every second. A writer
 * that dies stops renewing and the key ages out within LEASE_MS.
 */
import { hostname } from 'node:os';
import { Kvm, type KV } from '@nats-io/kv';
import { CqpError, messageOf } from '../../core/errors.js';
import type { Session } from './stream.js';
import { processAlive } from '../../core/pid.js';

const LEASE_BUCKET = 'cqp_log_leases';
/** How long a lease lasts without renewal: a dead writer's lapses within this. */
export const LEASE_MS = 5000;
const RENEW_MS = 1000;

/** The log's single-writer lease: a key in a bucket whose entries age out unless renewed. */
export class Lease {
  private timer: NodeJS.Timeout | undefined;
  private lost: string | undefined;
  private renewing = false;

  private constructor(
    private readonly kv: KV,
    private readonly key: string,
    private readonly value: string,
    private revision: number,
  ) {
    this.timer = setInterval(() => void this.renew(), RENEW_MS);
    this.timer.unref();
  }

  /** Takes the lease of the session's stream, or fails naming the writer that holds it. */
  static async take(s: Session): Promise<Lease> {
    const { location } = s;
    const stream = s.where.stream;
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
        return new Lease(kv, stream, value, revision);
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
          dead = v.host === hostname() && typeof v.pid === 'number' && v.pid !== process.pid && !processAlive(v.pid);
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

  private async renew(): Promise<void> {
    if (this.renewing || this.lost) return;
    this.renewing = true;
    try {
      this.revision = await this.kv.update(this.key, this.value, this.revision);
    } catch {
      const entry = await this.kv.get(this.key).catch(() => undefined);
      if (entry === null || (entry && entry.operation !== 'PUT')) {
        // Lapsed while the server was out of reach, and nobody took it: take it again. The appends'
        // expected last sequence still refuses anything written meanwhile by another writer.
        this.revision = await this.kv.create(this.key, this.value).catch(() => this.revision);
      } else if (entry && entry.revision !== this.revision) {
        this.lost = `another writer took the log's lease (${entry.string()})`;
      }
      // Otherwise the server is out of reach: try again at the next tick.
    } finally {
      this.renewing = false;
    }
  }

  /** Stops renewing and frees the key, unless another writer has taken it meanwhile. */
  async release(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    if (this.lost) return;
    await this.kv.delete(this.key, { previousSeq: this.revision }).catch(() => undefined);
  }
}
