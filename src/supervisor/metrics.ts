import { createServer, type Server } from 'node:http';
import { createRequire } from 'node:module';
import type * as PromClient from 'prom-client';
import type { AddressInfo } from 'node:net';
import { CqpError, messageOf } from '../core/errors.js';
import { parseTapQuery } from './taps.js';
import type { ComponentStats, Supervisor } from './supervisor.js';

/** Parses `HOST:PORT` (`127.0.0.1:9464`, `[::1]:0`, `:9464`) or a bare port (`9464`), which binds 127.0.0.1. */
export function parseHostPort(text: string): { host: string; port: number } {
  const m = /^(?:(?:\[([^\]]+)\]|([^:]*)):)?(\d+)$/.exec(text);
  const port = m ? Number(m[3]) : NaN;
  if (!m || !Number.isInteger(port) || port > 65535) {
    throw new CqpError('USAGE', `--metrics: expected HOST:PORT such as 127.0.0.1:9464, or a port, got "${text}"`);
  }
  return { host: m[1] ?? (m[2] || '127.0.0.1'), port };
}

/** Serves `/metrics` (Prometheus text), `/status` (JSON) and `/tap` (taps.ts); resolves with the bound address. */
export async function serveMetrics(supervisor: Supervisor, host: string, port: number): Promise<{ server: Server; address: string }> {
  // Loaded only with --metrics: it is a good part of the supervisor's start-up, before any stage runs.
  // Required, not imported: the bins' bundle is CommonJS, run from a code cache (see core/import-module.ts).
  const { Counter, Gauge, Registry } = createRequire(import.meta.url)('prom-client') as typeof PromClient;
  const registry = new Registry();
  // Totals only grow (a component's counts are kept across its processes), so they are counters; each
  // scrape sets them to the supervisor's current totals.
  const counter = (name: string, help: string, read: (c: ComponentStats) => number): void => {
    new Counter({
      name,
      help,
      labelNames: ['stage'],
      registers: [registry],
      collect() {
        this.reset();
        for (const c of supervisor.components()) this.inc({ stage: c.name }, read(c));
      },
    });
  };
  const gauge = (name: string, help: string, read: (c: ComponentStats) => number): void => {
    new Gauge({
      name,
      help,
      labelNames: ['stage'],
      registers: [registry],
      collect() {
        this.reset();
        for (const c of supervisor.components()) this.set({ stage: c.name }, read(c));
      },
    });
  };
  counter('cqp_stage_events_in_total', 'Events written into the stage.', (c) => c.in);
  counter('cqp_stage_events_out_total', 'Events the stage wrote out.', (c) => c.out);
  counter('cqp_stage_errors_total', 'Bad lines and rejected events the error policy of the stage skipped or dead-lettered.', (c) => c.errors);
  counter('cqp_stage_restarts_total', 'Restarts of the stage after crashes.', (c) => c.restarts);
  gauge('cqp_stage_generation', 'Process generation of the stage (1 + replacements).', (c) => c.generation);
  // A group's worker: 1 for each partition it holds, 0 for one it held before and no longer does.
  const everHeld = new Set<number>();
  new Gauge({
    name: 'cqp_partition_lease',
    help: 'Whether this worker holds the lease of the partition (1) or no longer does (0), per group and partition.',
    labelNames: ['group', 'partition'],
    registers: [registry],
    collect() {
      this.reset();
      const { group, partitions } = supervisor.worker();
      if (group === undefined) return;
      const held = new Set(partitions);
      for (const k of held) everHeld.add(k);
      for (const k of [...everHeld].sort((a, b) => a - b)) this.set({ group, partition: String(k) }, held.has(k) ? 1 : 0);
    },
  });
  new Counter({
    name: 'cqp_reloads_total',
    help: 'Pipeline reloads by result.',
    labelNames: ['result'],
    registers: [registry],
    collect() {
      this.reset();
      this.inc({ result: 'ok' }, supervisor.reloads.ok);
      this.inc({ result: 'failed' }, supervisor.reloads.failed);
    },
  });
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://cqp');
    const path = url.pathname;
    if (path === '/metrics') {
      registry.metrics().then(
        (text) => {
          res.writeHead(200, { 'content-type': registry.contentType });
          res.end(text);
        },
        () => {
          res.writeHead(500);
          res.end();
        },
      );
    } else if (path === '/status') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(`${JSON.stringify(supervisor.status())}\n`);
    } else if (path === '/tap') {
      try {
        supervisor.tap(parseTapQuery(url.searchParams), res);
      } catch (error) {
        res.writeHead(400, { 'content-type': 'text/plain' });
        res.end(`${messageOf(error)}\n`);
      }
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('try /metrics, /status or /tap\n');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error) => reject(new CqpError('USAGE', `--metrics: cannot listen on ${host}:${port}: ${error.message}`)));
    server.listen(port, host, () => resolve());
  });
  server.unref();
  const a = server.address() as AddressInfo;
  return { server, address: `${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}` };
}
