/**
 * What every part of the JetStream log shares: the location's parts, the connection to the server,
 * the stream's description (its log id and partitions), and the headers each message carries.
 */
import { randomBytes } from 'node:crypto';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { DiscardPolicy, jetstream, jetstreamManager, RetentionPolicy, StorageType, type JetStreamClient, type JetStreamManager, type StreamInfo } from '@nats-io/jetstream';
import { CqpError, messageOf } from '../../core/errors.js';

/** The header holding the source position of the event a message carries. */
export const POSITION_HEADER = 'Cqp-Position';
/** The server's dedupe id: the position, or a writer's own id for an event without one. */
export const ID_HEADER = 'Nats-Msg-Id';
/** The header holding the CRC-32C of the event's bytes, as 8 hex digits. */
export const CRC_HEADER = 'Cqp-Crc32c';
/** How long one request (a publish, an info) waits for its answer before it counts as failed. */
export const REQUEST_TIMEOUT_MS = 5000;
const DESCRIPTION = /^cqp command log id=([0-9a-f]{32}) partitions=(\d+)$/;

/** The subject of partition `k` of a stream's log. */
export function partitionSubject(stream: string, k: number): string {
  return `cqp.${stream}.${k}`;
}

/** The parts of a `nats://HOST:PORT/STREAM` location. */
export interface NatsLocation {
  servers: string;
  stream: string;
}

/** Splits a `nats://HOST:PORT/STREAM` location, naming what is wrong with a bad one. */
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

/** What the stream's description says: the log's id and its partition count. */
export interface StreamMeta {
  logId: string;
  partitions: number;
}

/** The log id and partitions of a stream cqp created; any other stream is refused. */
export function metaOf(location: string, info: StreamInfo): StreamMeta {
  const m = DESCRIPTION.exec(info.config.description ?? '');
  if (!m) {
    throw new CqpError('CONFIG', `${location}: stream ${info.config.name} exists but is not a cqp command log (it was not created by cqp); give another stream name`);
  }
  return { logId: m[1] as string, partitions: Number(m[2]) };
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

/** A connection to the server with JetStream, for one log's stream; closed by `close()`. */
export class Session {
  private constructor(
    readonly location: string,
    readonly where: NatsLocation,
    readonly nc: NatsConnection,
    readonly js: JetStreamClient,
    readonly jsm: JetStreamManager,
  ) {}

  /** Connects to the server of `location` (a writer's connection is named so on the server). */
  static async open(location: string, where: NatsLocation, forWriting = false): Promise<Session> {
    const nc = await connectTo(location, where.servers, forWriting);
    try {
      const jsm = await jetstreamManager(nc, { timeout: REQUEST_TIMEOUT_MS });
      return new Session(location, where, nc, jetstream(nc, { timeout: REQUEST_TIMEOUT_MS }), jsm);
    } catch (error) {
      await nc.close().catch(() => undefined);
      throw new CqpError('IO', `${location}: the NATS server at ${where.servers} has no JetStream (${messageOf(error)}); start it with -js`, { cause: error });
    }
  }

  /** The stream's info, or undefined when it does not exist. */
  async info(): Promise<StreamInfo | undefined> {
    try {
      return await this.jsm.streams.info(this.where.stream);
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw new CqpError('IO', `${this.location}: cannot read the stream (${messageOf(error)})`, { cause: error });
    }
  }

  /** The stream's info; a missing stream is an error that says how a log is created. */
  async infoOrFail(): Promise<StreamInfo> {
    const info = await this.info();
    if (!info) throw new CqpError('IO', `${this.location}: no such stream on ${this.where.servers} (a log is created by \`cqp-sink log --path ${this.location}\`)`);
    return info;
  }

  /** Creates the log's stream with a new log id and `partitions` subjects. */
  async createStream(partitions: number): Promise<StreamInfo> {
    const name = this.where.stream;
    try {
      return await this.jsm.streams.add({
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

  async close(): Promise<void> {
    await this.nc.close().catch(() => undefined);
  }
}
