import { createRequire } from 'node:module';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  CreateStreamCommand,
  DescribeStreamSummaryCommand,
  type KinesisClient,
  PutRecordsCommand,
} from '@aws-sdk/client-kinesis';
import { createKinesisClient } from '../../src/kinesis/client.js';
import { createPolicy, type ErrorMode } from '../../src/core/policy.js';
import { advance, splitStamp, type PositionMap } from '../../src/core/position.js';
import kinesisSource from '../../src/sources/kinesis.js';
import { eventually } from './eventually.js';

const require = createRequire(import.meta.url);

interface KinesaliteOptions {
  createStreamMs: number;
  deleteStreamMs: number;
  updateStreamMs: number;
  shardLimit: number;
}
type KinesaliteFactory = (options: KinesaliteOptions) => http.Server;

/** What the fault hook may answer for one call: an error for the whole call, or failed PutRecords entries. */
export type Fault = { error: string; message?: string } | { failRecords: number[] };

/** Decides, per call (`GetRecords`, `PutRecords`, …) and its JSON body, whether to inject a fault. */
export type FaultHook = (operation: string, body: Record<string, unknown>) => Fault | undefined;

export interface Kinesalite {
  /** `http://127.0.0.1:PORT` — loopback only. */
  endpoint: string;
  /** A client for the test's own calls (create, put, split). */
  client: KinesisClient;
  /** Calls seen per operation name. */
  calls: Map<string, number>;
  close(): Promise<void>;
}

/** Sets dummy AWS credentials and region for clients built in this process (and children given process.env). */
export function useDummyAwsEnv(): void {
  process.env['AWS_ACCESS_KEY_ID'] = 'AKIDTESTTESTTEST';
  process.env['AWS_SECRET_ACCESS_KEY'] = 'test-secret';
  process.env['AWS_REGION'] = 'us-east-1';
  delete process.env['AWS_PROFILE'];
}

function listen(server: http.Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port));
  });
}

function closeServer(server: http.Server): Promise<void> {
  return new Promise((resolve) => {
    server.closeAllConnections?.();
    server.close(() => resolve());
  });
}

/** Starts kinesalite in this process on a random loopback port; with `faults`, behind a fault-injecting proxy. */
export async function startKinesalite(options: { faults?: FaultHook } = {}): Promise<Kinesalite> {
  useDummyAwsEnv();
  const kinesalite = require('kinesalite') as KinesaliteFactory;
  const server = kinesalite({ createStreamMs: 0, deleteStreamMs: 0, updateStreamMs: 0, shardLimit: 100 });
  const port = await listen(server);
  const calls = new Map<string, number>();
  const servers: http.Server[] = [server];
  let endpointPort = port;
  // Counts calls; the proxy below counts them when it is in front.
  server.prependListener('request', (req: http.IncomingMessage) => {
    if (options.faults) return;
    const op = String(req.headers['x-amz-target'] ?? '').split('.')[1] ?? '';
    calls.set(op, (calls.get(op) ?? 0) + 1);
  });
  if (options.faults) {
    const proxy = http.createServer((req, res) => void handleProxied(req, res, port, options.faults as FaultHook, calls));
    endpointPort = await listen(proxy);
    servers.unshift(proxy);
  }
  const endpoint = `http://127.0.0.1:${endpointPort}`;
  const client = createKinesisClient({ endpoint, region: 'us-east-1' });
  return {
    endpoint,
    client,
    calls,
    async close() {
      client.destroy();
      for (const s of servers) await closeServer(s);
    },
  };
}

async function readBody(req: http.IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

function forward(port: number, req: http.IncomingMessage, body: Buffer): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const headers = { ...req.headers, 'content-length': String(body.length) };
    const out = http.request({ host: '127.0.0.1', port, method: req.method, path: req.url, headers }, (res) => {
      readBody(res).then((b) => resolve({ status: res.statusCode ?? 500, headers: res.headers, body: b }), reject);
    });
    out.on('error', reject);
    out.end(body);
  });
}

function sendJson(res: http.ServerResponse, status: number, value: unknown): void {
  const body = Buffer.from(JSON.stringify(value));
  res.writeHead(status, {
    'content-type': 'application/x-amz-json-1.1',
    'content-length': String(body.length),
    'x-amzn-requestid': 'fault-injected',
  });
  res.end(body);
}

async function handleProxied(req: http.IncomingMessage, res: http.ServerResponse, port: number, faults: FaultHook, calls: Map<string, number>): Promise<void> {
  try {
    const raw = await readBody(req);
    const op = String(req.headers['x-amz-target'] ?? '').split('.')[1] ?? '';
    calls.set(op, (calls.get(op) ?? 0) + 1);
    const body = raw.length > 0 ? (JSON.parse(raw.toString('utf8')) as Record<string, unknown>) : {};
    const fault = faults(op, body);
    if (fault && 'error' in fault) {
      sendJson(res, 400, { __type: fault.error, message: fault.message ?? `${fault.error} (injected by the test)` });
      return;
    }
    if (fault && op === 'PutRecords' && fault.failRecords.length > 0) {
      const records = body['Records'] as unknown[];
      const failed = new Set(fault.failRecords);
      const kept = records.filter((_, i) => !failed.has(i));
      let stored: Array<Record<string, unknown>> = [];
      if (kept.length > 0) {
        const answer = await forward(port, req, Buffer.from(JSON.stringify({ ...body, Records: kept })));
        if (answer.status !== 200) {
          res.writeHead(answer.status, answer.headers);
          res.end(answer.body);
          return;
        }
        stored = (JSON.parse(answer.body.toString('utf8')) as { Records: Array<Record<string, unknown>> }).Records;
      }
      let k = 0;
      const merged = records.map((_, i) =>
        failed.has(i)
          ? { ErrorCode: 'ProvisionedThroughputExceededException', ErrorMessage: 'Rate exceeded for shard (injected by the test)' }
          : stored[k++],
      );
      sendJson(res, 200, { FailedRecordCount: failed.size, Records: merged });
      return;
    }
    const answer = await forward(port, req, raw);
    res.writeHead(answer.status, answer.headers);
    res.end(answer.body);
  } catch (error) {
    sendJson(res, 500, { __type: 'InternalFailure', message: String(error) });
  }
}

/** Creates a stream with `shards` shards and waits until it is ACTIVE. */
export async function createStream(client: KinesisClient, name: string, shards: number): Promise<void> {
  await client.send(new CreateStreamCommand({ StreamName: name, ShardCount: shards }));
  await waitActive(client, name);
}

/** Waits until a stream is ACTIVE (after create, split or merge). */
export async function waitActive(client: KinesisClient, name: string): Promise<void> {
  await eventually(async () => (await client.send(new DescribeStreamSummaryCommand({ StreamName: name }))).StreamDescriptionSummary?.StreamStatus === 'ACTIVE', {
    everyMs: 10,
    what: `stream ${name} to become ACTIVE`,
  });
}

/** Puts records (key + text) in PutRecords calls of ≤ 500, in order; throws when any record fails. */
export async function putRecords(client: KinesisClient, stream: string, records: Array<{ key: string; data: string }>): Promise<void> {
  for (let i = 0; i < records.length; i += 500) {
    const chunk = records.slice(i, i + 500);
    const out = await client.send(
      new PutRecordsCommand({
        StreamName: stream,
        Records: chunk.map((r) => ({ PartitionKey: r.key, Data: Buffer.from(r.data) })),
      }),
    );
    if (out.FailedRecordCount) throw new Error(`${out.FailedRecordCount} records failed`);
  }
}

/** One event line a source emitted: its parsed body and its position stamp. */
export interface ReadLine {
  event: Record<string, unknown>;
  source: string;
  n: string;
}

/** Runs the kinesis source component as the runtime would, collecting its lines until it ends or `stopWhen` says so. */
export async function readWithSource(
  options: Record<string, unknown>,
  run: { resume?: PositionMap; mode?: ErrorMode; stopWhen?: (lines: ReadLine[]) => boolean; onBatch?: (lines: ReadLine[]) => Promise<void> } = {},
): Promise<{ lines: ReadLine[]; warnings: string[] }> {
  const warnings: string[] = [];
  const warn = (m: string): void => void warnings.push(m);
  const controller = new AbortController();
  const parsed = kinesisSource.options.parse(options);
  const policy = createPolicy({ mode: run.mode ?? 'fail', warn });
  const source = await kinesisSource.create(parsed, { policy, warn, signal: controller.signal, cwd: process.cwd(), resume: run.resume ?? {} });
  const lines: ReadLine[] = [];
  for await (const batch of source.batches()) {
    const got: ReadLine[] = batch.lines.map((line) => {
      const { text, position } = splitStamp(line);
      if (!position) throw new Error(`line without a position stamp: ${line}`);
      return { event: JSON.parse(text) as Record<string, unknown>, source: position.source, n: position.n };
    });
    lines.push(...got);
    // As the stage runtime does: the lines before a failure are kept, then the failure ends the read.
    if (batch.error !== undefined) throw batch.error;
    await run.onBatch?.(got);
    if (run.stopWhen?.(lines)) controller.abort();
  }
  return { lines, warnings };
}

/** The last position per source of some lines, as an exactly-once sink would store them. */
export function positionsOf(lines: readonly ReadLine[]): PositionMap {
  const applied: PositionMap = {};
  for (const l of lines) advance(applied, { source: l.source, n: l.n });
  return applied;
}
