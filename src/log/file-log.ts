/** The command log kept in one file (see `format.ts`), behind the `CommandLog` interface. */
import { existsSync } from 'node:fs';
import { CqpError } from '../core/errors.js';
import type { CommandLog, LogTailInfo, OpenWriterOptions } from './command-log.js';
import type { LogRecord } from './format.js';
import { readLog, readLogId, readLogTail, waitForLog, type ReadLogOptions } from './reader.js';
import { logStat, logVerify, type LogStat, type VerifyResult } from './tools.js';
import { openLogWriter, type LogWriter } from './writer.js';

/** A command log in one file; it holds nothing open between calls. */
export class FileCommandLog implements CommandLog {
  constructor(readonly location: string) {}

  exists(): Promise<boolean> {
    return Promise.resolve(existsSync(this.location));
  }

  waitFor(signal?: AbortSignal): Promise<boolean> {
    return waitForLog(this.location, signal);
  }

  logId(): Promise<string> {
    return readLogId(this.location);
  }

  async tail(): Promise<LogTailInfo> {
    const t = await readLogTail(this.location);
    return { logId: t.logId, lastSeq: t.lastSeq, lastTime: t.lastTime, positions: t.positions };
  }

  read(options?: ReadLogOptions): AsyncGenerator<LogRecord[]> {
    return readLog(this.location, options);
  }

  openWriter(options: OpenWriterOptions): Promise<LogWriter> {
    if (options.partitions !== undefined && options.partitions !== 1) {
      throw new CqpError('USAGE', `${this.location}: --partitions applies to a log on JetStream (nats://HOST:PORT/STREAM); a file log is one sequence`);
    }
    return openLogWriter(this.location, { fsync: options.fsync, warn: options.warn });
  }

  stat(): Promise<LogStat> {
    return logStat(this.location);
  }

  verify(): Promise<VerifyResult> {
    return logVerify(this.location);
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
