/**
 * The command log kept in a NATS JetStream stream (`nats://HOST:PORT/STREAM`), behind `CommandLog`.
 *
 * The stream is created by the first writer: file storage, limits retention (nothing is removed on
 * ack), subjects `cqp.<STREAM>.<partition>`, and a description naming it a cqp log with its id and
 * partition count. With N partitions an event goes to partition hash(entity key) mod N; the stream
 * sequence orders the whole log. One connection serves every read of an opened log until `close()`;
 * a writer has its own (`writer.ts`), which it closes with itself.
 */
import type { CommandLog, LogTailInfo, OpenWriterOptions, ShareReadOptions } from '../command-log.js';
import { sleep } from '../../core/backoff.js';
import { CqpError } from '../../core/errors.js';
import type { LogRecord } from '../format.js';
import type { ReadLogOptions } from '../reader.js';
import type { LogStat, VerifyResult } from '../tools.js';
import type { LogWriter } from '../writer.js';
import { positionsHeld } from './checkpoint.js';
import { readGroupShare } from './group.js';
import type { LogEvent } from '../input.js';
import { readRecords, verifyStream } from './reader.js';
import { metaOf, parseNatsLocation, Session, type NatsLocation } from './stream.js';
import { openJetStreamWriter } from './writer.js';

/** A command log on JetStream, opened at its location; connects on first use. */
export class JetStreamCommandLog implements CommandLog {
  private readonly where: NatsLocation;
  private session: Promise<Session> | undefined;

  constructor(readonly location: string) {
    this.where = parseNatsLocation(location);
  }

  /** The log's connection, made on first use; a failed attempt is forgotten so the next one tries again. */
  private connection(): Promise<Session> {
    if (!this.session) {
      const opening = Session.open(this.location, this.where);
      this.session = opening;
      opening.catch(() => {
        if (this.session === opening) this.session = undefined;
      });
    }
    return this.session;
  }

  async exists(): Promise<boolean> {
    return (await (await this.connection()).info()) !== undefined;
  }

  async waitFor(signal?: AbortSignal): Promise<boolean> {
    for (let attempt = 0; ; attempt++) {
      if (signal?.aborted) return false;
      try {
        const info = await (await this.connection()).info();
        if (info) {
          metaOf(this.location, info);
          return true;
        }
      } catch (error) {
        if (error instanceof CqpError && error.code === 'CONFIG') throw error;
        // Unreachable for now: keep waiting, as for a log not yet created.
      }
      if (!(await sleep(Math.min(200 + attempt * 50, 1000), signal))) return false;
    }
  }

  async logId(): Promise<string> {
    const s = await this.connection();
    return metaOf(this.location, await s.infoOrFail()).logId;
  }

  async tail(): Promise<LogTailInfo> {
    const s = await this.connection();
    const info = await s.infoOrFail();
    const { logId } = metaOf(this.location, info);
    const lastSeq = info.state.last_seq;
    const lastTime = info.state.messages === 0 ? 0 : Date.parse(info.state.last_ts);
    return { logId, lastSeq, lastTime, positions: (await positionsHeld(s, info, logId)).positions };
  }

  async *read(options: ReadLogOptions = {}): AsyncGenerator<LogRecord[]> {
    if (options.follow && !(await this.waitFor(options.signal))) return;
    yield* readRecords(await this.connection(), options);
  }

  openWriter(options: OpenWriterOptions): Promise<LogWriter> {
    return openJetStreamWriter(this.location, this.where, options);
  }

  async stat(): Promise<LogStat> {
    const s = await this.connection();
    const info = await s.infoOrFail();
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
      positions: (await positionsHeld(s, info, meta.logId)).positions,
    };
  }

  async verify(): Promise<VerifyResult> {
    return verifyStream(await this.connection());
  }

  readShare(options: ShareReadOptions): AsyncGenerator<LogEvent[]> {
    return readGroupShare({ ...options, location: this.location });
  }

  async close(): Promise<void> {
    const opening = this.session;
    this.session = undefined;
    if (opening) await (await opening.catch(() => undefined))?.close();
  }
}
