import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import { shellCommand } from '../helpers/cli.js';

const dir = mkdtempSync(join(tmpdir(), 'cqp-cqrs-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const VIEWS = join(import.meta.dirname, '../../pipelines/views/ice-creams.yaml');
const sh = (script: string): string => execFileSync('bash', ['-o', 'pipefail', '-c', script], { cwd: dir, encoding: 'utf8', maxBuffer: 1 << 30 });

interface Event {
  header: { eventName: string[]; rel: { id: string } };
  payload: { name?: string; price?: number; productId?: string; qty?: number };
}

describe('command log → query views, checked against an independent computation', () => {
  it('100k demo events: log, then views from the log, equal plain-JS folds of the same events', () => {
    sh(`${shellCommand('source', 'demo --count 100000 --seed 1')} | ${shellCommand('sink', 'log --path e.log')}`);
    sh(`${shellCommand('source', 'log --path e.log')} | ${shellCommand('sink', `sqlite --db v.db --views "${VIEWS}"`)}`);
    // The same events, as the log holds them, folded by hand (no cqp code involved).
    const events = sh(shellCommand('cqp', 'log cat e.log')).trimEnd().split('\n').map((l) => JSON.parse(l) as Event);
    expect(events).toHaveLength(100_000);

    const iceCreams = new Map<string, { name: string | undefined; price: number | undefined; product_id: string | undefined; sold: number }>();
    const sales = new Map<string, number>();
    for (const e of events) {
      const id = e.header.rel.id;
      const type = e.header.eventName[0];
      if (type === 'create.ice_cream' || type === 'update.ice_cream') {
        const row = iceCreams.get(id) ?? { name: undefined, price: undefined, product_id: undefined, sold: 0 };
        row.name = e.payload.name ?? row.name;
        row.price = e.payload.price ?? row.price;
        row.product_id = e.payload.productId ?? row.product_id;
        iceCreams.set(id, row);
      } else if (type === 'delete.ice_cream') {
        iceCreams.delete(id);
      } else if (type === 'sale.ice_cream') {
        const row = iceCreams.get(id);
        if (row) row.sold += e.payload.qty ?? 0;
        const product = e.payload.productId as string;
        sales.set(product, (sales.get(product) ?? 0) + (e.payload.qty ?? 0));
      }
    }

    const db = new Database(join(dir, 'v.db'), { readonly: true });
    const rows = db.prepare('SELECT id, name, price, product_id, sold FROM ice_creams ORDER BY id').all();
    const expected = [...iceCreams].sort(([a], [b]) => (a < b ? -1 : 1)).map(([id, r]) => ({ id, ...r }));
    expect(rows).toEqual(expected);
    const units = db.prepare('SELECT product_id, units FROM sales ORDER BY product_id').all();
    expect(units).toEqual([...sales].sort(([a], [b]) => (a < b ? -1 : 1)).map(([product_id, n]) => ({ product_id, units: n })));
    db.close();

    // Feeding the same log again changes nothing.
    sh(`${shellCommand('source', 'log --path e.log')} | ${shellCommand('sink', `sqlite --db v.db --views "${VIEWS}"`)}`);
    const again = new Database(join(dir, 'v.db'), { readonly: true });
    expect(again.prepare('SELECT id, name, price, product_id, sold FROM ice_creams ORDER BY id').all()).toEqual(expected);
    again.close();
  });
});
