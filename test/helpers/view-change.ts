/**
 * What the tests of a view changed while it is read share, for SQLite and PostgreSQL alike: the views
 * file before and after the change, an independent fold of the log to compare with, a log to fill,
 * kills at seeded random moments, and the check of what the readers saw.
 */
import { execFileSync, type ChildProcess } from 'node:child_process';
import { expect } from 'vitest';
import { openCommandLog } from '../../src/log/command-log.js';
import { shellCommand } from './cli.js';

export function viewsFile(extra = ''): string {
  return `views:
  - table: ice_creams
    columns:
      name: payload.name
      price: { path: payload.price, type: real }
      sold: { type: integer }${extra}
    on:
      create.ice_cream: upsert
      update.ice_cream: upsert
      delete.ice_cream: delete
      sale.ice_cream: { increment: { sold: payload.qty } }
`;
}

/** The views file after the change: one column more. */
export const WITH_COPY = viewsFile('\n      pcopy: { path: payload.price, type: real }');

export interface Row {
  id: string;
  name: string | null;
  price: number | null;
  sold: number;
  pcopy?: number | null;
}

/** The log's events, and the ice_creams view folded from them independently of cqp. */
export async function foldLog(log: string, copy: boolean): Promise<{ rows: Row[]; deletesAfter: (seq: number) => number }> {
  const l = await openCommandLog(log);
  const view = new Map<string, Row>();
  const deletes: number[] = [];
  try {
    for await (const batch of l.read({})) {
      for (const r of batch) {
        const e = JSON.parse(r.bytes.toString('utf8')) as { header: { eventName: string[]; rel: { id: string } }; payload: Record<string, unknown> };
        const id = e.header.rel.id;
        const type = e.header.eventName[0];
        if (type === 'delete.ice_cream') {
          view.delete(id);
          deletes.push(r.seq);
          continue;
        }
        if (type !== 'create.ice_cream' && type !== 'update.ice_cream' && type !== 'sale.ice_cream') continue;
        const row = view.get(id) ?? { id, name: null, price: null, sold: 0, ...(copy ? { pcopy: null } : {}) };
        if (type === 'sale.ice_cream') row.sold += Number(e.payload.qty);
        else {
          if ('name' in e.payload) row.name = e.payload.name as string;
          if ('price' in e.payload) {
            row.price = e.payload.price as number;
            if (copy) row.pcopy = e.payload.price as number;
          }
        }
        view.set(id, row);
      }
    }
  } finally {
    await l.close();
  }
  return { rows: [...view.values()].sort((a, b) => (a.id < b.id ? -1 : 1)), deletesAfter: (seq) => deletes.filter((s) => s > seq).length };
}

/** Fills a command log (events.log in `dir`) with demo events. */
export function fillLog(dir: string, count: number): void {
  execFileSync('sh', ['-c', `${shellCommand('source', `demo --count ${count}`)} | ${shellCommand('sink', 'log --path events.log --fsync never')}`], { cwd: dir });
}

/** Kills `c` with SIGKILL and waits until it is gone. */
export async function killNow(c: ChildProcess): Promise<void> {
  const exited = new Promise((resolve) => c.once('close', resolve));
  c.kill('SIGKILL');
  await exited;
}

/** Numbers in [0, 1) from a fixed seed: kills at random moments, the same moments on every run. */
export function seededRandom(seed: number): () => number {
  let s = seed;
  return () => (s = (s * 16807) % 2147483647) / 2147483647;
}

/** One read of the view while it changes. */
export interface Answer {
  count: number;
  copy: boolean;
  /** How many rows of the new column are null while it shows: none may be, built complete. */
  nullCopies: number;
}

/**
 * What readers saw through the change: the old version, then the new one complete; never fewer rows than
 * `floor` (the count before the change minus the deletes since), and once the new column shows it stays.
 */
export function expectOldThenNew(seen: Answer[], floor: number): void {
  expect(seen.length).toBeGreaterThan(5);
  expect(seen.some((a) => !a.copy)).toBe(true);
  expect(seen.some((a) => a.copy)).toBe(true);
  for (const a of seen) {
    expect(a.count).toBeGreaterThanOrEqual(floor);
    expect(a.nullCopies).toBe(0);
  }
  const first = seen.findIndex((a) => a.copy);
  expect(seen.slice(first).every((a) => a.copy)).toBe(true);
}
