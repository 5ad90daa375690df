/**
 * Leases on a JetStream log, kept in the `cqp_log_leases` key-value bucket: a key held by
 * compare-and-set on its revision and renewed every second, which ages out within LEASE_MS once its
 * holder stops renewing it (killed, paused, cut off). One mechanism serves both users:
 *
 * - the log's single writer holds the key named after the stream (`Lease.take`);
 * - the workers of a group hold one key per partition and one per worker (`group.ts`).
 */
import { hostname } from 'node:os';
import { Kvm, type KV } from '@nats-io/kv';
import { CqpError, messageOf } from '../../core/errors.js';
import type { Session } from './stream.js';
import { processAlive } from '../../core/pid.js';

const LEASE_BUCKET = 'cqp_log_leases';
/** How long a lease lasts without renewal: a dead holder's lapses within this. */
export const LEASE_MS = 5000;
const RENEW_MS = 1000;

/** Opens (creating when missing) the bucket every lease of the session's server lives in. */
export async function openLeaseBucket(s: Session): Promise<KV> {
  try {
    return await new Kvm(s.js).create(LEASE_BUCKET, { ttl: LEASE_MS, history: 1 });
  } catch (error) {
    throw new CqpError('IO', `${s.location}: cannot open the lease bucket ${LEASE_BUCKET} (${messageOf(error)})`, { cause: error });
  }
}

/** Who holds a lease, as its key's value says. */
export interface LeaseHolder {
  holder: string;
  host: string;
  pid: number;
  since: string;
}

function describeHolder(text: string): { who: string; dead: boolean } {
  try {
    const v = JSON.parse(text) as Partial<LeaseHolder>;
    // A holder on this machine whose process is gone (killed) need not be waited for.
    const dead = v.host === hostname() && typeof v.pid === 'number' && v.pid !== process.pid && !processAlive(v.pid);
    return { who: `${v.holder ?? '?'}, since ${v.since ?? '?'}`, dead };
  } catch {
    return { who: text, dead: false };
  }
}

/**
 * True when `key` is held (a member counts), false when nobody holds it: a key whose holder is a dead
 * process of this machine is deleted on the way, as it would lapse anyway.
 */
export async function heldByLive(kv: KV, key: string): Promise<boolean> {
  const entry = await kv.get(key);
  if (!entry || entry.operation !== 'PUT') return false;
  if (!describeHolder(entry.string()).dead) return true;
  await kv.delete(key, { previousSeq: entry.revision }).catch(() => undefined);
  return false;
}

/** One key of the bucket, held by this process until released or lost; see the top of this file. */
export class KeyLease {
  private timer: NodeJS.Timeout | undefined;
  private lost: string | undefined;
  private renewing = false;
  /** Called once when the lease is found taken by another holder. */
  onLost: ((reason: string) => void) | undefined;

  private constructor(
    private readonly kv: KV,
    readonly key: string,
    private readonly value: string,
    private revision: number,
  ) {
    this.timer = setInterval(() => void this.renew(), RENEW_MS);
    this.timer.unref();
  }

  /**
   * Takes `key` when nobody holds it (or its holder is a dead process of this machine); otherwise says
   * who holds it. Throws only when the server cannot answer.
   */
  static async tryTake(kv: KV, key: string): Promise<KeyLease | { heldBy: string }> {
    const value = JSON.stringify({ holder: `${hostname()} pid ${process.pid}`, host: hostname(), pid: process.pid, since: new Date().toISOString() } satisfies LeaseHolder);
    for (let attempt = 0; ; attempt++) {
      try {
        return new KeyLease(kv, key, value, await kv.create(key, value));
      } catch (error) {
        const entry = await kv.get(key).catch(() => null);
        if (!entry || entry.operation !== 'PUT') {
          if (attempt < 3) continue;
          throw error;
        }
        const { who, dead } = describeHolder(entry.string());
        if (dead && attempt < 3) {
          await kv.delete(key, { previousSeq: entry.revision }).catch(() => undefined);
          continue;
        }
        return { heldBy: who };
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
        // Lapsed while the server was out of reach, and nobody took it: take it again. Whatever was
        // done meanwhile by another holder is refused by its own checks (a log's expected last
        // sequence, a partition's stored position).
        this.revision = await this.kv.create(this.key, this.value).catch(() => this.revision);
      } else if (entry && entry.revision !== this.revision) {
        this.lost = `taken by ${describeHolder(entry.string()).who}`;
        clearInterval(this.timer);
        this.onLost?.(this.lost);
      }
      // Otherwise the server is out of reach: try again at the next tick.
    } finally {
      this.renewing = false;
    }
  }

  /** Stops renewing and frees the key, unless another holder has taken it meanwhile. */
  async release(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    if (this.lost) return;
    this.lost = 'released';
    await this.kv.delete(this.key, { previousSeq: this.revision }).catch(() => undefined);
  }
}

/** The log's single-writer lease: the key named after the stream. */
export class Lease {
  private constructor(private readonly key: KeyLease) {}

  /** Takes the lease of the session's stream, or fails naming the writer that holds it. */
  static async take(s: Session): Promise<Lease> {
    const kv = await openLeaseBucket(s);
    let got: KeyLease | { heldBy: string };
    try {
      got = await KeyLease.tryTake(kv, s.where.stream);
    } catch (error) {
      throw new CqpError('IO', `${s.location}: cannot take the log's lease (${messageOf(error)})`, { cause: error });
    }
    if (got instanceof KeyLease) return new Lease(got);
    throw new CqpError(
      'LOCKED',
      `${s.location}: another writer holds this log (${got.heldBy}); one writer at a time. If that writer has died, its lease lapses within ${LEASE_MS / 1000} s`,
    );
  }

  /** Why the lease was lost, when it was. */
  get lostReason(): string | undefined {
    const lost = this.key.lostReason;
    return lost === undefined || lost === 'released' ? undefined : `another writer took the log's lease (${lost})`;
  }

  async release(): Promise<void> {
    await this.key.release();
  }
}
