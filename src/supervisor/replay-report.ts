/** What `cqp replay` prints: the `--dry-run` plan, the progress line and the summary at the end. */
import type { BlueGreenFile } from './blue-green.js';
import type { ReplayPlan } from './replay.js';
import type { SinkEnd } from './sink-ends.js';
import { formatCount as count } from './status.js';
import type { ComponentStats } from './supervisor.js';

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

/** The `--dry-run` report: what would be read and what would happen to each sink. */
export function describeReplay(plan: ReplayPlan): string {
  const { range } = plan;
  const lines = [`cqp replay (dry run, nothing is read or written): ${plan.pipeline.name} from ${plan.log}`];
  if (range.first && range.last) {
    lines.push(`read: ${count(range.count)} events, seq ${range.first.seq}–${range.last.seq}, appended ${iso(range.first.time)} – ${iso(range.last.time)}`);
  } else {
    lines.push('read: no events (the log holds none in that range)');
  }
  if (plan.timeFilter) {
    const { path, from, until } = plan.timeFilter;
    lines.push(`keep: events whose ${path} is ${from === undefined ? '' : `≥ ${iso(from)}`}${from !== undefined && until !== undefined ? ' and ' : ''}${until === undefined ? '' : `≤ ${iso(until)}`}`);
  }
  lines.push(`stages: ${plan.run.stages.map((s) => s.name).join(' → ') || 'none'}`);
  lines.push('sinks:');
  for (const d of plan.sinks) {
    const what =
      d.swap
        ? `replaced: built into ${d.swap.temp}, then swapped in for ${d.swap.target} in one transaction`
        : d.action === 'replace'
        ? `replaced: built into ${(d.file as BlueGreenFile).temp}, then renamed over ${(d.file as BlueGreenFile).target}`
        : d.action === 'skip'
          ? 'skipped: it publishes outside cqp (add --with-external-sinks to publish)'
          : 'written';
    lines.push(`  ${d.plan.name} (${d.plan.type}): ${what}`);
  }
  return lines.join('\n');
}

/** Events read from the log: by the source, or, when the sinks read the log themselves, by the slowest. */
export function eventsRead(components: ComponentStats[]): number {
  const source = components.find((c) => c.kind === 'source');
  if (source) return source.out;
  const sinks = components.filter((c) => c.kind === 'sink');
  return sinks.length === 0 ? 0 : Math.min(...sinks.map((c) => c.in));
}

/** The end-of-replay summary: events read, each stage and sink, time and rate. */
export function replaySummary(plan: ReplayPlan, components: ComponentStats[], ms: number, ends: readonly SinkEnd[] = []): string {
  const secs = Math.max(ms / 1000, 0.001);
  const read = eventsRead(components);
  const span = plan.range.first && plan.range.last ? ` (seq ${plan.range.first.seq}–${plan.range.last.seq})` : '';
  const lines = [`cqp replay: ${count(read)} events read from ${plan.log}${span} in ${secs.toFixed(1)} s (${count(Math.round(read / secs))} events/s)`];
  for (const c of components) if (c.kind === 'stage') lines.push(`  ${c.name}: ${count(c.in)} in, ${count(c.out)} out`);
  for (const d of plan.sinks) {
    const stats = components.find((c) => c.kind === 'sink' && c.name === d.plan.name);
    const end = ends.find((e) => e.name === d.plan.name);
    const at = end ? `, ${end.text}` : '';
    if (d.action === 'skip') lines.push(`  ${d.plan.name} (${d.plan.type}): skipped, an external sink (--with-external-sinks publishes to it)`);
    else if (d.file ?? d.swap) lines.push(`  ${d.plan.name} (${d.plan.type}): ${count(stats?.in ?? 0)} events written${at}, ${d.file?.target ?? d.swap?.target ?? ''} replaced`);
    else lines.push(`  ${d.plan.name} (${d.plan.type}): ${count(stats?.in ?? 0)} events written${at}`);
  }
  return lines.join('\n');
}

function formatSeconds(s: number): string {
  if (!Number.isFinite(s)) return '?';
  if (s < 60) return `${Math.ceil(s)} s`;
  return `${Math.floor(s / 60)} min ${Math.ceil(s % 60)} s`;
}

/** One progress reading: events read of the total, rate and time left. */
export function progressText(read: number, total: number, ms: number, width = 0): string {
  const rate = ms > 0 ? read / (ms / 1000) : 0;
  const eta = rate > 0 ? formatSeconds((total - read) / rate) : '?';
  const share = total > 0 ? Math.min(1, read / total) : 1;
  const bar = width > 0 ? `[${'#'.repeat(Math.round(share * width)).padEnd(width, '-')}] ` : '';
  return `${bar}${(share * 100).toFixed(0).padStart(3)}%  ${count(read)}/${count(total)} events  ${count(Math.round(rate))}/s  ETA ${eta}`;
}
