import { type KinesisClient, PutRecordsCommand, type PutRecordsRequestEntry } from '@aws-sdk/client-kinesis';
import { CqpError, messageOf } from '../core/errors.js';
import { awsErrorName, describeTarget, type KinesisTarget, streamNotFound } from './client.js';
import { backoffMs, sleep } from '../core/backoff.js';
import { isRetryable } from './retry.js';

/** Kinesis limits on one PutRecords call and one record (data plus partition key). */
export const MAX_BATCH_RECORDS = 500;
export const MAX_BATCH_BYTES = 5 * 1024 * 1024;
export const MAX_RECORD_BYTES = 1024 * 1024;

/** One record to publish. */
export interface OutgoingRecord {
  key: string;
  data: Buffer;
}

export interface PublisherOptions {
  client: KinesisClient;
  stream: string;
  target: KinesisTarget;
  /** Retries of one batch (calls that fail, or that leave records unwritten) before giving up. */
  maxRetries?: number;
  warn?: (message: string) => void;
}

/** Bytes Kinesis counts for a record against its limits. */
export function recordBytes(r: OutgoingRecord): number {
  return r.data.length + Buffer.byteLength(r.key);
}

/** Cuts records into PutRecords batches of at most 500 records and 5 MiB, in order. */
export function planBatches(records: readonly OutgoingRecord[]): OutgoingRecord[][] {
  const batches: OutgoingRecord[][] = [];
  let current: OutgoingRecord[] = [];
  let bytes = 0;
  for (const r of records) {
    const size = recordBytes(r);
    if (current.length > 0 && (current.length >= MAX_BATCH_RECORDS || bytes + size > MAX_BATCH_BYTES)) {
      batches.push(current);
      current = [];
      bytes = 0;
    }
    current.push(r);
    bytes += size;
  }
  if (current.length > 0) batches.push(current);
  return batches;
}

/**
 * The records to send again after a PutRecords answer: every failed record, and every later record that
 * shares a key with one being sent again, in their order — so no record overtakes an earlier one of its key.
 */
export function recordsToResend(sent: readonly OutgoingRecord[], failed: (i: number) => boolean): OutgoingRecord[] {
  const keys = new Set<string>();
  const again: OutgoingRecord[] = [];
  for (let i = 0; i < sent.length; i++) {
    const r = sent[i] as OutgoingRecord;
    if (failed(i) || keys.has(r.key)) {
      keys.add(r.key);
      again.push(r);
    }
  }
  return again;
}

/**
 * Publishes records to a stream in order, one PutRecords call at a time, keeping order per partition key.
 * A stop signal does not cut a batch short: the events in hand are delivered (or the retries run out).
 */
export class KinesisPublisher {
  private readonly o: PublisherOptions;

  constructor(options: PublisherOptions) {
    this.o = options;
  }

  /** Publishes all records; resolves when Kinesis has accepted every one of them. */
  async publish(records: readonly OutgoingRecord[]): Promise<void> {
    for (const batch of planBatches(records)) await this.putBatch(batch);
  }

  private async putBatch(batch: OutgoingRecord[]): Promise<void> {
    const maxRetries = this.o.maxRetries ?? 20;
    let pending = batch;
    for (let attempt = 0; pending.length > 0; ) {
      let failedCodes: Array<string | undefined>;
      try {
        const entries: PutRecordsRequestEntry[] = pending.map((r) => ({ PartitionKey: r.key, Data: r.data }));
        const out = await this.o.client.send(new PutRecordsCommand({ StreamName: this.o.stream, Records: entries }));
        const results = out.Records ?? [];
        failedCodes = pending.map((_, i) => (results[i] ? results[i].ErrorCode : 'MissingResult'));
      } catch (error) {
        if (awsErrorName(error) === 'ResourceNotFoundException') throw streamNotFound(this.o.stream, this.o.target, error);
        if (!isRetryable(error) || attempt >= maxRetries) {
          throw new CqpError(
            'IO',
            `Kinesis PutRecords to stream "${this.o.stream}" at ${describeTarget(this.o.target)} failed: ${awsErrorName(error) || 'error'}: ${messageOf(error)}`,
            { cause: error },
          );
        }
        await sleep(backoffMs(attempt++));
        continue;
      }
      const again = recordsToResend(pending, (i) => failedCodes[i] !== undefined);
      if (again.length === 0) return;
      const reasons = [...new Set(failedCodes.filter((c): c is string => c !== undefined))].join(', ');
      if (attempt >= maxRetries) {
        throw new CqpError('IO', `Kinesis stream "${this.o.stream}" kept refusing ${again.length} records (${reasons}) after ${maxRetries} retries`);
      }
      if (attempt === 5) this.o.warn?.(`cqp: Kinesis stream "${this.o.stream}" keeps refusing records (${reasons}); still retrying`);
      pending = again;
      await sleep(backoffMs(attempt++));
    }
  }
}
