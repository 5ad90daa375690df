import {
  GetRecordsCommand,
  GetShardIteratorCommand,
  type GetShardIteratorCommandInput,
  type KinesisClient,
  ListShardsCommand,
  type Shard,
} from '@aws-sdk/client-kinesis';
import { compareN } from '../core/position.js';
import { CqpError, messageOf } from '../core/errors.js';
import { awsErrorName, describeTarget, type KinesisTarget, streamNotFound } from './client.js';
import { backoffMs, sleep } from '../core/backoff.js';
import { isRetryable } from './retry.js';

/** One Kinesis record as the reader yields it. */
export interface KinesisRecord {
  shardId: string;
  sequenceNumber: string;
  data: Buffer;
}

/** Where a shard with a stored position resumes. */
export interface ResumePoint {
  n: string;
  inclusive: boolean;
}

/** Where shards without a stored position start. */
export type StartAt = { type: 'trim-horizon' } | { type: 'latest' } | { type: 'at-timestamp'; timestamp: Date };

export interface ShardReaderOptions {
  client: KinesisClient;
  stream: string;
  /** Endpoint and region, for messages. */
  target: KinesisTarget;
  start: StartAt;
  /** Per shard id, where it resumes: after sequence number `n`, or at it when `inclusive`. */
  resume?: Record<string, ResumePoint>;
  /** Wait after a GetRecords that returned nothing (AWS allows 5 calls per second per shard). */
  pollMs?: number;
  /** How often the shard list is fetched again to find splits and merges (it is also fetched whenever a shard ends). */
  listShardsMs?: number;
  /** Records per GetRecords call (AWS allows up to 10,000). */
  limit?: number;
  /** Batches held between the shard readers and the consumer before the readers wait. */
  bufferBatches?: number;
  /** End after this long without records once every open shard is at its tip. */
  maxIdleMs?: number;
  signal?: AbortSignal;
  warn?: (message: string) => void;
}

type ShardState = 'waiting' | 'reading' | 'done';

interface ShardEntry {
  shard: Shard;
  state: ShardState;
  /** The last GetRecords returned nothing: this shard is at its tip. */
  atTip: boolean;
  /** Read from a stored position, or a descendant of one: children start at TRIM_HORIZON. */
  resumed: boolean;
  /** Records of this shard were (or will be) read in this run, so its children must be read whole. */
  consumed: boolean;
}

function parentsOf(shard: Shard): string[] {
  const out: string[] = [];
  if (shard.ParentShardId) out.push(shard.ParentShardId);
  if (shard.AdjacentParentShardId) out.push(shard.AdjacentParentShardId);
  return out;
}

/**
 * Reads every shard of a stream, parents before children, and yields batches of records in per-shard
 * order. Shards are read concurrently; a bounded buffer between them and the consumer keeps memory flat.
 */
export async function* readShards(options: ShardReaderOptions): AsyncGenerator<KinesisRecord[]> {
  const reader = new ShardReader(options);
  try {
    yield* reader.run();
  } finally {
    reader.stop();
  }
}

class ShardReader {
  private readonly o: ShardReaderOptions;
  private readonly controller = new AbortController();
  private readonly shards = new Map<string, ShardEntry>();
  private readonly queue: KinesisRecord[][] = [];
  private readonly capacity: number;
  private readonly pollMs: number;
  private readonly limit: number;
  private failure: unknown;
  private wakeConsumer: (() => void) | undefined;
  private readonly spaceWaiters: Array<() => void> = [];
  private lastRecordsAt = Date.now();
  private listing: Promise<void> | undefined;
  private listAgain = false;

  constructor(options: ShardReaderOptions) {
    this.o = options;
    this.capacity = Math.max(1, options.bufferBatches ?? 4);
    this.pollMs = options.pollMs ?? 250;
    this.limit = options.limit ?? 2500;
    if (options.signal) {
      if (options.signal.aborted) this.controller.abort();
      else options.signal.addEventListener('abort', () => this.stop(), { once: true });
    }
  }

  private get signal(): AbortSignal {
    return this.controller.signal;
  }

  stop(): void {
    if (!this.controller.signal.aborted) this.controller.abort();
    this.notify();
    for (const wake of this.spaceWaiters.splice(0)) wake();
  }

  private fail(error: unknown): void {
    if (this.failure === undefined) this.failure = error;
    this.stop();
  }

  private notify(): void {
    const wake = this.wakeConsumer;
    this.wakeConsumer = undefined;
    wake?.();
  }

  async *run(): AsyncGenerator<KinesisRecord[]> {
    await this.refreshShards();
    void this.relistPeriodically();
    for (;;) {
      const batch = this.queue.shift();
      if (batch) {
        this.spaceWaiters.shift()?.();
        yield batch;
        continue;
      }
      if (this.failure !== undefined) throw this.failure;
      if (this.signal.aborted || this.allDone() || this.idleLongEnough()) return;
      await new Promise<void>((resolve) => {
        this.wakeConsumer = resolve;
        if (this.o.maxIdleMs !== undefined) setTimeout(resolve, Math.min(100, this.o.maxIdleMs)).unref?.();
      });
    }
  }

  private allDone(): boolean {
    if (this.shards.size === 0) return false;
    for (const e of this.shards.values()) if (e.state !== 'done') return false;
    return true;
  }

  private idleLongEnough(): boolean {
    if (this.o.maxIdleMs === undefined || this.shards.size === 0) return false;
    for (const e of this.shards.values()) {
      if (e.state === 'waiting') return false;
      if (e.state === 'reading' && !e.atTip) return false;
    }
    return Date.now() - this.lastRecordsAt >= this.o.maxIdleMs;
  }

  private async relistPeriodically(): Promise<void> {
    const every = this.o.listShardsMs ?? 10_000;
    while (await sleep(every, this.signal)) {
      try {
        await this.refreshShards();
      } catch (error) {
        this.fail(error);
        return;
      }
    }
  }

  /** Fetches the shard list (serialised: a request during a listing runs once more after it) and starts eligible shards. */
  private refreshShards(): Promise<void> {
    if (this.listing) {
      this.listAgain = true;
      return this.listing;
    }
    this.listing = (async () => {
      try {
        do {
          this.listAgain = false;
          const shards = await this.listShards();
          for (const shard of shards) {
            const id = shard.ShardId;
            if (id && !this.shards.has(id)) {
              this.shards.set(id, { shard, state: 'waiting', atTip: false, resumed: false, consumed: false });
            } else if (id) {
              (this.shards.get(id) as ShardEntry).shard = shard;
            }
          }
          this.startEligible();
        } while (this.listAgain && !this.signal.aborted);
      } finally {
        this.listing = undefined;
      }
    })();
    return this.listing;
  }

  private async listShards(): Promise<Shard[]> {
    const out: Shard[] = [];
    let nextToken: string | undefined;
    let attempt = 0;
    for (let more = true; more; ) {
      try {
        const page = await this.o.client.send(
          new ListShardsCommand(nextToken ? { NextToken: nextToken } : { StreamName: this.o.stream }),
          { abortSignal: this.signal },
        );
        out.push(...(page.Shards ?? []));
        nextToken = page.NextToken;
        more = nextToken !== undefined;
        attempt = 0;
      } catch (error) {
        if (this.signal.aborted) return out;
        if (awsErrorName(error) === 'ResourceNotFoundException') throw streamNotFound(this.o.stream, this.o.target, error);
        if (!isRetryable(error) || attempt >= 20) throw this.ioError('ListShards', error);
        if (!(await sleep(backoffMs(attempt++), this.signal))) return out;
      }
    }
    return out;
  }

  private ioError(call: string, error: unknown): CqpError {
    if (error instanceof CqpError) return error;
    return new CqpError(
      'IO',
      `Kinesis ${call} on stream "${this.o.stream}" at ${describeTarget(this.o.target)} failed: ${awsErrorName(error) || 'error'}: ${messageOf(error)}`,
      { cause: error },
    );
  }

  /** True when some descendant of `id` has a stored position: then `id` was read to its end before. */
  private hasResumedDescendant(id: string, seen = new Set<string>()): boolean {
    for (const e of this.shards.values()) {
      const childId = e.shard.ShardId as string;
      if (seen.has(childId) || !parentsOf(e.shard).includes(id)) continue;
      seen.add(childId);
      if (this.o.resume?.[childId] !== undefined || this.hasResumedDescendant(childId, seen)) return true;
    }
    return false;
  }

  private startEligible(): void {
    if (this.signal.aborted) return;
    let changed = true;
    while (changed) {
      changed = false;
      for (const entry of this.shards.values()) {
        if (entry.state !== 'waiting') continue;
        // A parent missing from the list has aged out of the stream: nothing of it is left to read.
        const parents = parentsOf(entry.shard)
          .map((p) => this.shards.get(p))
          .filter((p): p is ShardEntry => p !== undefined);
        if (parents.some((p) => p.state !== 'done')) continue;
        changed = true;
        const plan = this.plan(entry, parents);
        if (plan === undefined) {
          entry.state = 'done';
          continue;
        }
        entry.state = 'reading';
        entry.consumed = true;
        void this.readShard(entry, plan).catch((error: unknown) => this.fail(error));
      }
    }
  }

  /** The iterator a shard starts from, or undefined when there is nothing of it to read. */
  private plan(entry: ShardEntry, parents: ShardEntry[]): GetShardIteratorCommandInput | undefined {
    const shard = entry.shard;
    const id = shard.ShardId as string;
    const base = { StreamName: this.o.stream, ShardId: id };
    const closed = shard.SequenceNumberRange?.EndingSequenceNumber;
    const stored = this.o.resume?.[id];
    if (stored !== undefined || this.hasResumedDescendant(id)) entry.resumed = true;
    if (this.hasResumedDescendant(id)) return undefined;
    if (stored !== undefined) {
      if (closed !== undefined && compareN(stored.n, closed) > (stored.inclusive ? 0 : -1)) return undefined;
      return {
        ...base,
        ShardIteratorType: stored.inclusive ? 'AT_SEQUENCE_NUMBER' : 'AFTER_SEQUENCE_NUMBER',
        StartingSequenceNumber: stored.n,
      };
    }
    if (parents.some((p) => p.resumed)) {
      entry.resumed = true;
      return { ...base, ShardIteratorType: 'TRIM_HORIZON' };
    }
    const start = this.o.start;
    if (parents.some((p) => p.consumed)) {
      // The parent was read here, so the child is read whole (from the timestamp, for at-timestamp).
      return start.type === 'at-timestamp'
        ? { ...base, ShardIteratorType: 'AT_TIMESTAMP', Timestamp: start.timestamp }
        : { ...base, ShardIteratorType: 'TRIM_HORIZON' };
    }
    if (start.type === 'latest') return closed !== undefined ? undefined : { ...base, ShardIteratorType: 'LATEST' };
    if (start.type === 'at-timestamp') return { ...base, ShardIteratorType: 'AT_TIMESTAMP', Timestamp: start.timestamp };
    return { ...base, ShardIteratorType: 'TRIM_HORIZON' };
  }

  private async getIterator(input: GetShardIteratorCommandInput): Promise<string | undefined> {
    for (let attempt = 0; ; attempt++) {
      try {
        const out = await this.o.client.send(new GetShardIteratorCommand(input), { abortSignal: this.signal });
        return out.ShardIterator;
      } catch (error) {
        if (this.signal.aborted) return undefined;
        const name = awsErrorName(error);
        if (name === 'ResourceNotFoundException') throw streamNotFound(this.o.stream, this.o.target, error);
        if (name === 'InvalidArgumentException' && input.StartingSequenceNumber !== undefined) {
          throw new CqpError(
            'IO',
            `Kinesis stream "${this.o.stream}" rejected the stored position ${input.StartingSequenceNumber} of ${input.ShardId} (${messageOf(error)}); the stream may have been re-created — clear the stored position to read it from --start`,
            { cause: error },
          );
        }
        if (!isRetryable(error) || attempt >= 20) throw this.ioError('GetShardIterator', error);
        if (!(await sleep(backoffMs(attempt), this.signal))) return undefined;
      }
    }
  }

  /** Waits for room in the buffer; false when the reader stopped meanwhile. */
  private async push(batch: KinesisRecord[]): Promise<boolean> {
    while (this.queue.length >= this.capacity && !this.signal.aborted) {
      await new Promise<void>((resolve) => this.spaceWaiters.push(resolve));
    }
    if (this.signal.aborted) return false;
    this.queue.push(batch);
    this.lastRecordsAt = Date.now();
    this.notify();
    return true;
  }

  private async readShard(entry: ShardEntry, plan: GetShardIteratorCommandInput): Promise<void> {
    const shardId = entry.shard.ShardId as string;
    let iterator = await this.getIterator(plan);
    let lastSeq: string | undefined;
    let attempt = 0;
    while (iterator !== undefined && !this.signal.aborted) {
      let out;
      try {
        out = await this.o.client.send(new GetRecordsCommand({ ShardIterator: iterator, Limit: this.limit }), { abortSignal: this.signal });
        attempt = 0;
      } catch (error) {
        if (this.signal.aborted) return;
        const name = awsErrorName(error);
        if (name === 'ExpiredIteratorException') {
          // Iterators live five minutes; a slow consumer outlives them. Start again after the last record read.
          iterator = await this.getIterator(
            lastSeq !== undefined ? { ...plan, ShardIteratorType: 'AFTER_SEQUENCE_NUMBER', StartingSequenceNumber: lastSeq, Timestamp: undefined } : plan,
          );
          continue;
        }
        if (name === 'ResourceNotFoundException') throw streamNotFound(this.o.stream, this.o.target, error);
        if (!isRetryable(error) || attempt >= 30) throw this.ioError(`GetRecords (${shardId})`, error);
        if (attempt === 5) this.o.warn?.(`cqp: Kinesis ${shardId} keeps failing (${name || messageOf(error)}); still retrying`);
        if (!(await sleep(backoffMs(attempt++), this.signal))) return;
        continue;
      }
      const records = out.Records ?? [];
      if (records.length > 0) {
        const batch: KinesisRecord[] = new Array(records.length);
        for (let i = 0; i < records.length; i++) {
          const r = records[i] as (typeof records)[number];
          const data = r.Data ?? new Uint8Array();
          batch[i] = { shardId, sequenceNumber: r.SequenceNumber as string, data: Buffer.from(data.buffer, data.byteOffset, data.byteLength) };
        }
        lastSeq = (batch[batch.length - 1] as KinesisRecord).sequenceNumber;
        entry.atTip = false;
        if (!(await this.push(batch))) return;
      } else {
        entry.atTip = true;
        this.notify();
      }
      iterator = out.NextShardIterator;
      if (iterator === undefined) break;
      if (records.length === 0 && !(await sleep(this.pollMs, this.signal))) return;
    }
    if (this.signal.aborted) return;
    entry.state = 'done';
    this.notify();
    // A closed shard has children now: list again to start them.
    await this.refreshShards();
  }
}
