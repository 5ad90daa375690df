/** The views the PostgreSQL tests keep, an independent fold of the events into them, and readers of both stores. */
import Database from 'better-sqlite3';
import pg from 'pg';

export const URL_ = 'postgres://postgres@127.0.0.1:5432/test';

export const VIEWS = `views:
  - table: ice_creams
    key: header.rel.id
    columns:
      product_id: payload.productId
      name: payload.name
      price: { path: payload.price, type: real }
      flavors: { path: payload.flavors, type: json }
      dairy_free: { path: payload.dairyFree, type: boolean }
      sold: { type: integer }
    on:
      create.ice_cream: upsert
      update.ice_cream: upsert
      delete.ice_cream: delete
      sale.ice_cream: { increment: { sold: payload.qty } }
  - table: sales
    key: { column: product_id, path: payload.productId }
    columns:
      units: { type: integer }
      last_sale: header.createdTimestamp
    on:
      sale.ice_cream: { increment: { units: payload.qty } }
`;

export type Row = Record<string, unknown>;

/** Rows as plain comparable values: numbers as numbers, JSON as its parsed value, booleans as 0/1. */
export function norm(rows: Row[]): Row[] {
  return rows.map((r) =>
    Object.fromEntries(
      Object.entries(r).map(([k, v]) => {
        if (typeof v === 'boolean') return [k, v ? 1 : 0];
        if (typeof v === 'bigint') return [k, Number(v)];
        if (k === 'flavors' && typeof v === 'string') return [k, JSON.parse(v) as unknown];
        if (typeof v === 'string' && (k === 'sold' || k === 'units')) return [k, Number(v)];
        return [k, v];
      }),
    ),
  );
}

/** An independent fold of the demo events into the two views (what the views file says, in plain code). */
export function fold(events: Row[]): { ice_creams: Row[]; sales: Row[] } {
  const ice = new Map<string, Row>();
  const sales = new Map<string, Row>();
  for (const e of events) {
    const h = e.header as { eventName: string[]; rel: { id: string } };
    const p = e.payload as Record<string, unknown>;
    const id = h.rel.id;
    const type = h.eventName[0];
    if (type === 'delete.ice_cream') ice.delete(id);
    else if (type === 'create.ice_cream' || type === 'update.ice_cream') {
      const row = ice.get(id) ?? { id, product_id: null, name: null, price: null, flavors: null, dairy_free: null, sold: 0 };
      const set = (col: string, v: unknown): void => {
        if (v !== undefined) row[col] = typeof v === 'boolean' ? (v ? 1 : 0) : v;
      };
      set('product_id', p.productId);
      set('name', p.name);
      set('price', p.price);
      set('flavors', p.flavors);
      set('dairy_free', p.dairyFree);
      ice.set(id, row);
    } else if (type === 'sale.ice_cream') {
      const row = ice.get(id) ?? { id, product_id: null, name: null, price: null, flavors: null, dairy_free: null, sold: 0 };
      row.sold = (row.sold as number) + (p.qty as number);
      ice.set(id, row);
      // last_sale has a path but no action writes it (sale only increments): it stays empty.
      const s = sales.get(p.productId as string) ?? { product_id: p.productId, units: 0, last_sale: null };
      s.units = (s.units as number) + (p.qty as number);
      sales.set(p.productId as string, s);
    }
  }
  const byKey = (k: string) => (a: Row, b: Row) => String(a[k]).localeCompare(String(b[k]));
  return { ice_creams: [...ice.values()].sort(byKey('id')), sales: [...sales.values()].sort(byKey('product_id')) };
}

export async function client(): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: URL_ });
  c.on('error', () => undefined);
  await c.connect();
  return c;
}

export async function pgViews(schema: string): Promise<{ ice_creams: Row[]; sales: Row[] }> {
  const c = await client();
  try {
    const ice = await c.query(`SELECT id, product_id, name, price, flavors, dairy_free, sold FROM "${schema}".ice_creams ORDER BY id COLLATE "C"`);
    const sales = await c.query(`SELECT product_id, units, last_sale FROM "${schema}".sales ORDER BY product_id COLLATE "C"`);
    return { ice_creams: norm(ice.rows as Row[]), sales: norm(sales.rows as Row[]) };
  } finally {
    await c.end();
  }
}

export async function positionOf(schema: string, url = URL_): Promise<number> {
  const c = new pg.Client({ connectionString: url });
  c.on('error', () => undefined);
  try {
    await c.connect();
    const r = await c.query<{ n: string }>(`SELECT min(n::bigint)::text AS n FROM "${schema}".cqp_positions`);
    return Number(r.rows[0]?.n ?? 0);
  } catch {
    return 0;
  } finally {
    await c.end().catch(() => undefined);
  }
}

export function sqliteViews(db: string): { ice_creams: Row[]; sales: Row[] } {
  const d = new Database(db, { readonly: true });
  try {
    return {
      ice_creams: norm(d.prepare('SELECT id, product_id, name, price, flavors, dairy_free, sold FROM ice_creams').all() as Row[]).sort((a, b) => (String(a.id) < String(b.id) ? -1 : 1)),
      sales: norm(d.prepare('SELECT product_id, units, last_sale FROM sales').all() as Row[]).sort((a, b) => (String(a.product_id) < String(b.product_id) ? -1 : 1)),
    };
  } finally {
    d.close();
  }
}

