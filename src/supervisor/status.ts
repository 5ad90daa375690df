import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { stderrColor } from '../core/color.js';
import { CqpError } from '../core/errors.js';
import type { SinkEnd } from './sink-ends.js';
import type { ComponentStats, Supervisor } from './supervisor.js';

/** A component silent this long is stalled (ms): a cqp component reports at least once a second while it runs. */
const STALL_MS = 5000;

/**
 * Seconds since a stalled component last reported (stopped by SIGSTOP, or hung), or undefined while it
 * reports. Only components that report are judged (`heardAt`; not `run:` programs).
 */
export function stalledFor(c: ComponentStats, now = Date.now()): number | undefined {
  if (c.heardAt === undefined) return undefined;
  const silent = now - c.heardAt;
  return silent >= STALL_MS ? Math.floor(silent / 1000) : undefined;
}

/** Events per second of each component since the previous sample. */
export class Rates {
  private last = new Map<string, { in: number; out: number; at: number }>();
  private rates = new Map<string, { in: number; out: number }>();

  sample(components: ComponentStats[], now = Date.now()): void {
    for (const c of components) {
      const before = this.last.get(c.name);
      if (before && now > before.at) {
        const dt = (now - before.at) / 1000;
        this.rates.set(c.name, { in: Math.max(0, (c.in - before.in) / dt), out: Math.max(0, (c.out - before.out) / dt) });
      }
      this.last.set(c.name, { in: c.in, out: c.out, at: now });
    }
  }

  of(name: string): { in: number; out: number } {
    return this.rates.get(name) ?? { in: 0, out: 0 };
  }
}

function pad(text: string, width: number, right = false): string {
  return right ? text.padStart(width) : text.padEnd(width);
}

/** The live table shown on a terminal: one row per component. */
export function renderTable(components: ComponentStats[], rates: Rates, reloads: { ok: number; failed: number }): string {
  const head = ['stage', 'pid', 'gen', 'in/s', 'out/s', 'in', 'out', 'errors', 'restarts', 'state'];
  const rows = components.map((c) => {
    const r = rates.of(c.name);
    const stalled = stalledFor(c);
    const state = stalled === undefined ? '' : stderrColor.yellow(`stalled ${stalled}s`);
    return [c.name, String(c.pid ?? '-'), String(c.generation), r.in.toFixed(0), c.kind === 'sink' ? '' : r.out.toFixed(0), String(c.in), c.kind === 'sink' ? '' : String(c.out), String(c.errors), String(c.restarts), state];
  });
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] as string).length)));
  const line = (cells: string[]): string => cells.map((cell, i) => pad(cell, widths[i] as number, i > 0 && i < cells.length - 1)).join('  ').trimEnd();
  return [stderrColor.bold(line(head)), ...rows.map(line), `reloads: ${reloads.ok} ok, ${reloads.failed} failed`].join('\n');
}

/** One status line for a log (no terminal). */
export function statusLine(components: ComponentStats[], rates: Rates, reloads: { ok: number; failed: number }): string {
  const parts = components.map((c) => {
    const r = rates.of(c.name);
    const restarts = c.restarts > 0 ? ` restarts=${c.restarts}` : '';
    const errors = c.errors > 0 ? ` errors=${c.errors}` : '';
    const stalled = stalledFor(c);
    const state = stalled === undefined ? '' : ` stalled (no report for ${stalled} s)`;
    return c.kind === 'sink' ? `${c.name} in=${c.in} (${r.in.toFixed(0)}/s)${errors}${restarts}${state}` : `${c.name} out=${c.out} (${r.out.toFixed(0)}/s)${errors}${restarts}${state}`;
  });
  return `cqp: ${parts.join(' | ')} | reloads ${reloads.ok} ok ${reloads.failed} failed`;
}

/** The end-of-run summary: events in and out per component, time and rate, where each exactly-once sink ended, and what failed for good. */
export function summary(components: ComponentStats[], ms: number, ends: readonly SinkEnd[] = [], failures: readonly string[] = []): string {
  const secs = Math.max(ms / 1000, 0.001);
  const source = components.find((c) => c.kind === 'source');
  const read = source?.out ?? 0;
  // An exactly-once sink's line says where it ended, beside the log's end (`views: 30000 in, at seq 30000 of 30000`).
  const at = (name: string): string => {
    const end = ends.find((e) => e.name === name);
    return end ? `, ${end.text}` : '';
  };
  const lines = components.map((c) =>
    c.kind === 'source' ? `  ${c.name}: ${c.out} out` : c.kind === 'sink' ? `  ${c.name}: ${c.in} in${at(c.name)}` : `  ${c.name}: ${c.in} in, ${c.out} out`,
  );
  const failed = failures.map((f) => `  failed: ${f}`);
  return [`cqp: ${read} events in ${secs.toFixed(1)} s (${Math.round(read / secs)}/s)`, ...lines, ...failed].join('\n');
}

/** Parses `HOST:PORT` (`127.0.0.1:9464`, `[::1]:0`, `:9464`). */
export function parseHostPort(text: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(text);
  const port = m ? Number(m[3]) : NaN;
  if (!m || !Number.isInteger(port) || port > 65535) {
    throw new CqpError('USAGE', `--metrics: expected HOST:PORT such as 127.0.0.1:9464, got "${text}"`);
  }
  return { host: m[1] ?? (m[2] || '127.0.0.1'), port };
}

/** Serves `/metrics` (Prometheus text) and `/status` (JSON); resolves with the bound address. */
export async function serveMetrics(supervisor: Supervisor, host: string, port: number): Promise<{ server: Server; address: string }> {
  // Loaded only with --metrics: it is a good part of the supervisor's start-up, before any stage runs.
  const { Gauge, Registry } = await import('prom-client');
  const registry = new Registry();
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
  gauge('cqp_stage_events_in_total', 'events written into the stage', (c) => c.in);
  gauge('cqp_stage_events_out_total', 'events the stage wrote out', (c) => c.out);
  gauge('cqp_stage_errors_total', 'bad lines and rejected events the stage reported', (c) => c.errors);
  gauge('cqp_stage_restarts_total', 'restarts after crashes', (c) => c.restarts);
  gauge('cqp_stage_generation', 'process generation (1 + replacements)', (c) => c.generation);
  new Gauge({
    name: 'cqp_reloads_total',
    help: 'pipeline reloads by result',
    labelNames: ['result'],
    registers: [registry],
    collect() {
      this.set({ result: 'ok' }, supervisor.reloads.ok);
      this.set({ result: 'failed' }, supervisor.reloads.failed);
    },
  });
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
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
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('try /metrics or /status\n');
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
