/**
 * Changing a view while it is read: the new version is built beside the live one and swapped in, so a
 * reader never sees it empty or half built, and a kill -9 during the build or the swap loses nothing.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { BIN } from '../helpers/cli.js';
import { eventually } from '../helpers/eventually.js';
import { runPipeline, tmpDir } from '../helpers/pipeline.js';
import { expectOldThenNew, fillLog, foldLog, killNow, seededRandom, viewsFile, WITH_COPY, type Answer as ViewAnswer, type Row } from '../helpers/view-change.js';

function tableRows(db: string, copy: boolean): Row[] {
  const d = new Database(db, { readonly: true });
  try {
    return d.prepare(`SELECT id, name, price, sold${copy ? ', pcopy' : ''} FROM ice_creams ORDER BY id`).all() as Row[];
  } finally {
    d.close();
  }
}

interface Answer extends ViewAnswer {
  /** The view's position (the log's seq) when the answer was read. */
  at: number;
}

/** Reads the view every 50 ms, each answer in one read transaction, until `stop` says so. */
async function reader(db: string, stop: () => boolean): Promise<Answer[]> {
  const answers: Answer[] = [];
  const d = new Database(db, { readonly: true });
  try {
    const read = d.transaction((): Answer => {
      const copy = (d.prepare("SELECT count(*) FROM pragma_table_info('ice_creams') WHERE name = 'pcopy'").pluck().get() as number) === 1;
      const count = d.prepare('SELECT count(*) FROM ice_creams').pluck().get() as number;
      const nullCopies = copy ? (d.prepare('SELECT count(*) FROM ice_creams WHERE pcopy IS NULL AND price IS NOT NULL').pluck().get() as number) : 0;
      const at = Number(d.prepare("SELECT max(CAST(n AS INTEGER)) FROM cqp_positions WHERE view = 'ice_creams'").pluck().get());
      return { count, copy, nullCopies, at };
    });
    while (!stop()) {
      answers.push(read());
      await sleep(50);
    }
  } finally {
    d.close();
  }
  return answers;
}

const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

describe('changing a view', () => {
  it('under cqp run: readers see the old version, then the new one complete, never an empty or half-built one', async () => {
    const dir = tmpDir();
    fillLog(dir, 150_000);
    writeFileSync(join(dir, 'views.yaml'), viewsFile());
    writeFileSync(
      join(dir, 'p.yaml'),
      `source: { type: demo, count: 0, rate: 300 }
sinks:
  - { name: log, type: log, path: events.log }
  - { name: views, type: sqlite, db: views.db, views: views.yaml }
`,
    );
    const db = join(dir, 'views.db');
    const p = runPipeline(join(dir, 'p.yaml'), { metrics: true });
    await eventually(() => (tableRows(db, false).length > 0 ? (new Database(db, { readonly: true }).prepare("SELECT max(CAST(n AS INTEGER)) FROM cqp_positions").pluck().get() as number) >= 150_000 : false), {
      timeoutMs: 60_000,
      what: () => `the views to catch up with the log; stderr:\n${p.stderr()}`,
    });
    const d = new Database(db, { readonly: true });
    const pre = d.transaction(() => ({
      count: d.prepare('SELECT count(*) FROM ice_creams').pluck().get() as number,
      at: Number(d.prepare("SELECT n FROM cqp_positions WHERE view = 'ice_creams'").pluck().get()),
    }))();
    d.close();
    let done = false;
    const answers = reader(db, () => done);
    // /status shows the rebuild as the views sink's activity, with its progress.
    const activities: string[] = [];
    const statuses = (async () => {
      while (!done) {
        const views = (await p.status()).stages.find((s) => s.name === 'views') as { activity?: string | null } | undefined;
        if (views?.activity) activities.push(views.activity);
        await sleep(100);
      }
    })();
    writeFileSync(join(dir, 'views.yaml.tmp'), WITH_COPY);
    renameSync(join(dir, 'views.yaml.tmp'), join(dir, 'views.yaml'));
    await p.waitFor(/\[views\] rebuilding ice_creams \(definition changed\) beside the live one/, 30_000);
    await p.waitFor(/\[views\] swapped in the new version of ice_creams at event \d+/, 60_000);
    await sleep(300);
    done = true;
    const seen = await answers;
    await statuses;
    p.child.kill('SIGTERM');
    expect(await p.exitWithin(30_000), p.stderr()).toBe(0);

    const { rows, deletesAfter } = await foldLog(join(dir, 'events.log'), true);
    // Never below what was there minus the deletes since; the new column only ever complete, and once shown it stays.
    expectOldThenNew(seen, pre.count - deletesAfter(pre.at));
    expect(tableRows(db, true)).toEqual(rows);
    expect(activities.some((a) => /^rebuilding ice_creams: \d+% of \d+ events/.test(a)), activities.join('\n')).toBe(true);
  }, 120_000);

  it('kill -9 during the build and the swap: the build goes on from where it got to, and the view ends right', async () => {
    const dir = tmpDir();
    fillLog(dir, 120_000);
    const db = join(dir, 'views.db');
    const views = join(dir, 'views.yaml');
    writeFileSync(views, viewsFile());
    const sink = (): ChildProcess => {
      const c = spawn(process.execPath, [BIN.sink, 'sqlite', '--db', db, '--views', views, '--read-log', join(dir, 'events.log'), '--follow'], { stdio: ['ignore', 'ignore', 'pipe'] });
      children.push(c);
      return c;
    };
    const first = sink();
    await eventually(() => (tableRows(db, false).length > 0 ? (new Database(db, { readonly: true }).prepare("SELECT n FROM cqp_positions WHERE view = 'ice_creams'").pluck().get() as string) === '120000' : false), {
      timeoutMs: 60_000,
      what: 'the view to catch up with the log',
    });
    await killNow(first);
    writeFileSync(views, WITH_COPY);
    const shadow = join(dir, 'views.db.rebuild');
    const stored = (): number => {
      try {
        const d = new Database(shadow, { readonly: true });
        try {
          return Number(d.prepare("SELECT n FROM cqp_positions WHERE view = 'ice_creams'").pluck().get() ?? 0);
        } finally {
          d.close();
        }
      } catch {
        return 0;
      }
    };
    const positions: number[] = [];
    let swapped = false;
    // Kills at random moments (a fixed seed: the same moments on every run) until the swap has happened.
    const random = seededRandom(7);
    for (let round = 0; round < 40 && !swapped; round++) {
      const c = sink();
      let err = '';
      c.stderr?.on('data', (b: Buffer) => (err += b.toString()));
      await eventually(() => err.includes('rebuilding ice_creams') || /pcopy/.test(JSON.stringify(colNames(db))), { what: () => `the sink to start; stderr:\n${err}` });
      await sleep(100 + random() * 600);
      await killNow(c);
      positions.push(stored());
      swapped = colNames(db).includes('pcopy');
    }
    expect(swapped).toBe(true);
    // The build went on from where it got to: its stored position grew across the restarts.
    const building = positions.filter((n) => n > 0);
    expect(building.length).toBeGreaterThan(1);
    for (let i = 1; i < building.length; i++) expect(building[i]).toBeGreaterThanOrEqual(building[i - 1] as number);
    // One last start lets it settle; then the view is the fold of the log.
    const last = sink();
    await eventually(() => (new Database(db, { readonly: true }).prepare("SELECT n FROM cqp_positions WHERE view = 'ice_creams'").pluck().get() as string) === '120000', {
      what: 'the new version to hold the whole log',
    });
    await killNow(last);
    const { rows } = await foldLog(join(dir, 'events.log'), true);
    expect(tableRows(db, true)).toEqual(rows);
  }, 120_000);
});

function colNames(db: string): string[] {
  const d = new Database(db, { readonly: true });
  try {
    return (d.prepare("SELECT name FROM pragma_table_info('ice_creams')").pluck().all() as string[]);
  } finally {
    d.close();
  }
}
