/**
 * The positions a JetStream log holds, kept up to a sequence number so that they need not be read
 * from every message header each time a writer starts.
 *
 * The checkpoint is a key named after the stream in the `cqp_log_positions` bucket: the log's id, a
 * sequence number, the dedupe id of the message there, and the positions of every record up to it.
 * The writer stores one after each acknowledged batch, so it covers only records the stream holds: it
 * lags the stream and never leads it, and a kill at any moment leaves at worst an older one. A reader
 * takes it only when the stream still holds that message under the same id in the same log (so a
 * stream deleted and created again, or cut back, is read in full), and reads the headers after it.
 */
import { Kvm, type KV } from '@nats-io/kv';
import type { StreamInfo } from '@nats-io/jetstream';
import { messageOf } from '../../core/errors.js';
import type { PositionMap } from '../../core/position.js';
import { scanPositions } from './reader.js';
import { ID_HEADER, type Session } from './stream.js';

const CHECKPOINT_BUCKET = 'cqp_log_positions';

/** The positions of every record of the log up to `seq`, whose message has dedupe id `id`. */
export interface Checkpoint {
  logId: string;
  seq: number;
  id: string;
  positions: PositionMap;
}

function parseCheckpoint(text: string): Checkpoint | undefined {
  try {
    const v = JSON.parse(text) as Partial<Checkpoint>;
    const positions = v.positions;
    if (typeof v.logId !== 'string' || typeof v.seq !== 'number' || !Number.isSafeInteger(v.seq) || v.seq < 1 || typeof v.id !== 'string') return undefined;
    if (typeof positions !== 'object' || positions === null || Object.values(positions).some((n) => typeof n !== 'string')) return undefined;
    return { logId: v.logId, seq: v.seq, id: v.id, positions };
  } catch {
    return undefined;
  }
}

/**
 * The stream's checkpoint when it can be trusted for `info` (the stream as it is now, of log `logId`);
 * undefined when there is none, it is unreadable, or it no longer matches the stream.
 */
export async function readCheckpoint(s: Session, info: StreamInfo, logId: string): Promise<Checkpoint | undefined> {
  const stream = s.where.stream;
  let text: string | undefined;
  try {
    const kv = await new Kvm(s.js).open(CHECKPOINT_BUCKET);
    const entry = await kv.get(stream);
    text = entry && entry.operation === 'PUT' ? entry.string() : undefined;
  } catch {
    // No bucket yet (no writer has stored a checkpoint), or unreadable: read every header instead.
    return undefined;
  }
  const cp = text === undefined ? undefined : parseCheckpoint(text);
  if (!cp || cp.logId !== logId || cp.seq > info.state.last_seq || cp.seq < info.state.first_seq) return undefined;
  const m = await s.jsm.streams.getMessage(stream, { seq: cp.seq }).catch(() => null);
  return m?.header?.get(ID_HEADER) === cp.id ? cp : undefined;
}

/**
 * Stores a writer's checkpoints, one at a time and never in the append's path: while one is being
 * stored, only the newest of those noted meanwhile is kept to store next.
 */
export class CheckpointKeeper {
  private next: Checkpoint | undefined;
  private storing: Promise<void> | undefined;

  private constructor(
    private readonly kv: KV,
    private readonly key: string,
  ) {}

  /** Opens (creating when missing) the bucket the writer of the session's stream keeps its checkpoints in. */
  static async open(s: Session, warn: (message: string) => void): Promise<CheckpointKeeper | undefined> {
    try {
      const kv = await new Kvm(s.js).create(CHECKPOINT_BUCKET, { history: 1 });
      return new CheckpointKeeper(kv, s.where.stream);
    } catch (error) {
      // The log works without it: each start reads every header, as before there were checkpoints.
      warn(`${s.location}: cannot open the positions bucket ${CHECKPOINT_BUCKET} (${messageOf(error)}); each writer start reads the whole stream`);
      return undefined;
    }
  }

  /** Notes a checkpoint to store: it must cover only records the stream has acknowledged. */
  note(cp: Checkpoint): void {
    this.next = { ...cp, positions: { ...cp.positions } };
    this.storing ??= this.storeAll();
  }

  private async storeAll(): Promise<void> {
    try {
      for (let cp = this.next; cp; cp = this.next) {
        this.next = undefined;
        // One not stored (the server out of reach) leaves an older one: it costs only start-up time,
        // and the appends report the outage themselves.
        await this.kv.put(this.key, JSON.stringify(cp)).catch(() => undefined);
      }
    } finally {
      this.storing = undefined;
    }
  }

  /** Waits until the newest checkpoint noted is stored (or failed). */
  async flush(): Promise<void> {
    while (this.storing) await this.storing;
  }
}

/** The positions the log holds up to `info`'s last record, and the dedupe id of that record. */
export interface HeldPositions {
  positions: PositionMap;
  lastId: string | undefined;
  /** Records whose headers were read (those after the checkpoint, or all without one). */
  scanned: number;
}

/** The positions the stream holds: from its checkpoint when one can be trusted, then the headers after it. */
export async function positionsHeld(s: Session, info: StreamInfo, logId: string): Promise<HeldPositions> {
  const lastSeq = info.state.last_seq;
  if (lastSeq === 0 || info.state.messages === 0) return { positions: {}, lastId: undefined, scanned: 0 };
  const cp = await readCheckpoint(s, info, logId);
  const positions: PositionMap = { ...(cp?.positions ?? {}) };
  const { read, lastId } = await scanPositions(s, cp?.seq ?? 0, lastSeq, positions);
  return { positions, lastId: read > 0 ? lastId : cp?.id, scanned: read };
}
