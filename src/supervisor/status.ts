import { fstatSync } from 'node:fs';
import { isatty } from 'node:tty';
import { stderrColor } from '../core/color.js';
import type { PipelinePlan } from './plan.js';
import type { SinkEnd } from './sink-ends.js';
import type { ComponentStats } from './supervisor.js';

/**
 * How `cqp run` shows its progress, from where its stdout and stderr go: the live table on a terminal,
 * one line per interval otherwise. Never when stdout is the same file as stderr: a `stdout` sink writes
 * the events there, and a table redrawn over them, or status lines among them, would spoil the data.
 */
export function statusMode(stdoutFd: number, stderrFd: number): 'table' | 'lines' | 'none' {
  if (sameFile(stdoutFd, stderrFd)) return 'none';
  return isatty(stderrFd) ? 'table' : 'lines';
}

function sameFile(a: number, b: number): boolean {
  try {
    const [x, y] = [fstatSync(a), fstatSync(b)];
    return x.dev === y.dev && x.ino === y.ino && x.rdev === y.rdev;
  } catch {
    // A closed descriptor holds no data to protect.
    return false;
  }
}

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

/**
 * For each component, the one whose count bounds its `in`: a stage or a sink fed by the stages reads
 * the output of the one before it; a sink following the log reads what the log sink appended.
 */
export function upstreams(plan: PipelinePlan): Map<string, string> {
  const up = new Map<string, string>();
  let previous = plan.source.name;
  for (const stage of plan.stages) {
    up.set(stage.name, previous);
    previous = stage.name;
  }
  for (const sink of plan.sinks) {
    const path = sink.logInput?.path;
    if (path === undefined) up.set(sink.name, previous);
    else {
      const writer = plan.sinks.find((s) => !s.logInput && s.store === path);
      if (writer) up.set(sink.name, writer.name);
    }
  }
  return up;
}

/**
 * The counts as shown: each component reports on its own clock, so a row sampled later can be ahead of
 * the one it reads from. No component shows more `in` than its upstream had put out (or, for a sink
 * following the log, than the log sink had appended) by then; `out` is left alone, since a filter may
 * fan one event out into several.
 */
export function consistentCounts(components: readonly ComponentStats[], upstream: ReadonlyMap<string, string>): ComponentStats[] {
  const raw = new Map(components.map((c) => [c.name, c]));
  const shown = new Map<string, ComponentStats>();
  const show = (c: ComponentStats, seen: Set<string>): ComponentStats => {
    const done = shown.get(c.name);
    if (done) return done;
    const upName = upstream.get(c.name);
    const up = upName === undefined || seen.has(upName) ? undefined : raw.get(upName);
    const bound = up === undefined ? undefined : show(up, new Set([...seen, c.name]));
    const limit = bound === undefined ? undefined : bound.kind === 'sink' ? bound.in : bound.out;
    const row = limit !== undefined && c.in > limit ? { ...c, in: limit } : c;
    shown.set(c.name, row);
    return row;
  };
  return components.map((c) => show(c, new Set([c.name])));
}

/** Events per second of each component since the previous sample; none before a component's second sample. */
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

  of(name: string): { in: number; out: number } | undefined {
    return this.rates.get(name);
  }
}

/**
 * A count as every summary and status line prints it: `30,000`. Grouped by hand: the first
 * toLocaleString of a process starts ICU, which costs a short `cqp replay` some 20 ms.
 */
export function formatCount(n: number): string {
  return String(Math.round(n)).replace(/\B(?=(\d{3})+$)/g, ',');
}

function formatRate(rate: number | undefined): string {
  return rate === undefined ? '-' : formatCount(Math.round(rate));
}

function pad(text: string, width: number, right = false): string {
  return right ? text.padStart(width) : text.padEnd(width);
}

/** What a group's worker holds, as the table and the status lines show it: `group views: partitions 0, 3, 5`. */
export function holdingText(worker: { group?: string; partitions?: number[] }): string | undefined {
  if (worker.group === undefined) return undefined;
  const held = worker.partitions ?? [];
  return `group ${worker.group}: ${held.length === 0 ? 'no partition held' : `partition${held.length === 1 ? '' : 's'} ${held.join(', ')}`}`;
}

/** The live table shown on a terminal: one row per component. */
export function renderTable(components: ComponentStats[], rates: Rates, reloads: { ok: number; failed: number }, worker: { group?: string; partitions?: number[] } = {}): string {
  const head = ['stage', 'pid', 'gen', 'in/s', 'out/s', 'in', 'out', 'errors', 'restarts', 'state'];
  const rows = components.map((c) => {
    const r = rates.of(c.name);
    const stalled = stalledFor(c);
    const state = stalled === undefined ? (c.activity ?? '') : stderrColor.yellow(`stalled ${stalled}s`);
    const sink = c.kind === 'sink';
    return [c.name, String(c.pid ?? '-'), String(c.generation), formatRate(r?.in), sink ? '' : formatRate(r?.out), formatCount(c.in), sink ? '' : formatCount(c.out), formatCount(c.errors), String(c.restarts), state];
  });
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] as string).length)));
  const line = (cells: string[]): string => cells.map((cell, i) => pad(cell, widths[i] as number, i > 0 && i < cells.length - 1)).join('  ').trimEnd();
  const holding = holdingText(worker);
  return [stderrColor.bold(line(head)), ...rows.map(line), `reloads: ${reloads.ok} ok, ${reloads.failed} failed`, ...(holding ? [holding] : [])].join('\n');
}

/** One status line for a log (no terminal); the first one, with no rate measured yet, shows counts only. */
export function statusLine(components: ComponentStats[], rates: Rates, reloads: { ok: number; failed: number }, worker: { group?: string; partitions?: number[] } = {}): string {
  const parts = components.map((c) => {
    const r = rates.of(c.name);
    const restarts = c.restarts > 0 ? ` restarts=${c.restarts}` : '';
    const errors = c.errors > 0 ? ` errors=${formatCount(c.errors)}` : '';
    const stalled = stalledFor(c);
    const state = stalled === undefined ? (c.activity === undefined ? '' : ` (${c.activity})`) : ` stalled (no report for ${stalled} s)`;
    const rate = (n: number | undefined): string => (n === undefined ? '' : ` (${formatRate(n)}/s)`);
    return c.kind === 'sink' ? `${c.name} in=${formatCount(c.in)}${rate(r?.in)}${errors}${restarts}${state}` : `${c.name} out=${formatCount(c.out)}${rate(r?.out)}${errors}${restarts}${state}`;
  });
  const holding = holdingText(worker);
  return `cqp: ${parts.join(' | ')} | reloads ${reloads.ok} ok ${reloads.failed} failed${holding ? ` | ${holding}` : ''}`;
}

/** The end-of-run summary: events in and out per component, time and rate, where each exactly-once sink ended, and what failed for good. */
export function summary(components: ComponentStats[], ms: number, ends: readonly SinkEnd[] = [], failures: readonly string[] = []): string {
  const secs = Math.max(ms / 1000, 0.001);
  const source = components.find((c) => c.kind === 'source');
  const read = source?.out ?? 0;
  // An exactly-once sink's line says where it ended, beside the log's end (`views: 30,000 in, at seq 30000 of 30000`).
  const at = (name: string): string => {
    const end = ends.find((e) => e.name === name);
    return end ? `, ${end.text}` : '';
  };
  const n = formatCount;
  const lines = components.map((c) =>
    c.kind === 'source' ? `  ${c.name}: ${n(c.out)} out` : c.kind === 'sink' ? `  ${c.name}: ${n(c.in)} in${at(c.name)}` : `  ${c.name}: ${n(c.in)} in, ${n(c.out)} out`,
  );
  const failed = failures.map((f) => `  failed: ${f}`);
  return [`cqp: ${n(read)} ${read === 1 ? 'event' : 'events'} in ${secs.toFixed(1)} s (${n(Math.round(read / secs))}/s)`, ...lines, ...failed].join('\n');
}
