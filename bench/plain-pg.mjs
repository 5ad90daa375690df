// The postgres baseline: readline + JSON.parse + the pg client, 1000 events a transaction, each batch one
// multi-row upsert through unnest (a batch's events folded per key first: PostgreSQL refuses an upsert that
// touches one row twice) and one DELETE, the same 3-column work as bench/views-3col.yaml.
import readline from 'node:readline';
import pg from 'pg';

const [url, schema] = process.argv.slice(2);
const client = new pg.Client({ connectionString: url });
await client.connect();
await client.query(`CREATE SCHEMA IF NOT EXISTS "${schema}"`);
await client.query(`CREATE TABLE IF NOT EXISTS "${schema}".ice_creams (id text PRIMARY KEY, name text, price double precision, product_id text)`);
const upsert =
  `INSERT INTO "${schema}".ice_creams AS t (id, name, price, product_id) SELECT * FROM unnest($1::text[], $2::text[], $3::float8[], $4::text[]) ` +
  'ON CONFLICT (id) DO UPDATE SET name = coalesce(excluded.name, t.name), price = coalesce(excluded.price, t.price), product_id = coalesce(excluded.product_id, t.product_id)';

async function apply(events) {
  const rows = new Map();
  const deleted = new Set();
  for (const e of events) {
    const type = e.header.eventName[0];
    const id = e.header.rel.id;
    if (type === 'delete.ice_cream') {
      rows.delete(id);
      deleted.add(id);
    } else if (type === 'create.ice_cream' || type === 'update.ice_cream') {
      const row = rows.get(id) ?? { name: null, price: null, productId: null };
      row.name = e.payload.name ?? row.name;
      row.price = e.payload.price ?? row.price;
      row.productId = e.payload.productId ?? row.productId;
      rows.set(id, row);
    }
  }
  await client.query('BEGIN');
  if (deleted.size > 0) await client.query(`DELETE FROM "${schema}".ice_creams WHERE id = ANY($1::text[])`, [[...deleted]]);
  if (rows.size > 0) {
    const ids = [...rows.keys()];
    const values = [...rows.values()];
    await client.query(upsert, [ids, values.map((r) => r.name), values.map((r) => r.price), values.map((r) => r.productId)]);
  }
  await client.query('COMMIT');
}

let batch = [];
for await (const line of readline.createInterface({ input: process.stdin, crlfDelay: Infinity })) {
  if (line === '') continue;
  batch.push(JSON.parse(line));
  if (batch.length === 1000) {
    await apply(batch);
    batch = [];
  }
}
await apply(batch);
await client.end();
