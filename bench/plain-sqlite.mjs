// The sqlite baseline: readline + JSON.parse + a prepared 3-column upsert, 1000 events a transaction.
import readline from 'node:readline';
import Database from 'better-sqlite3';

const db = new Database(process.argv[2]);
db.pragma('journal_mode = WAL');
db.pragma('synchronous = NORMAL');
db.exec('CREATE TABLE IF NOT EXISTS ice_creams (id TEXT PRIMARY KEY, name TEXT, price REAL, product_id TEXT)');
const upsert = db.prepare(
  'INSERT INTO ice_creams (id, name, price, product_id) VALUES (?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET ' +
    'name = coalesce(excluded.name, name), price = coalesce(excluded.price, price), product_id = coalesce(excluded.product_id, product_id)',
);
const remove = db.prepare('DELETE FROM ice_creams WHERE id = ?');
const apply = db.transaction((events) => {
  for (const e of events) {
    const type = e.header.eventName[0];
    if (type === 'delete.ice_cream') remove.run(e.header.rel.id);
    else if (type === 'create.ice_cream' || type === 'update.ice_cream') upsert.run(e.header.rel.id, e.payload.name ?? null, e.payload.price ?? null, e.payload.productId ?? null);
  }
});
let batch = [];
for await (const line of readline.createInterface({ input: process.stdin, crlfDelay: Infinity })) {
  if (line === '') continue;
  batch.push(JSON.parse(line));
  if (batch.length === 1000) {
    apply(batch);
    batch = [];
  }
}
apply(batch);
db.close();
