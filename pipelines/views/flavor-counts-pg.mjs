// flavor-counts.mjs for PostgreSQL: how many ice creams currently list each flavour.
// The postgres sink calls init(sql) once when the view is built and handle(event, sql) for every event,
// inside the batch's transaction (each event that queries in a savepoint of its own). sql.run/get/all take $1-style
// parameters and return promises; the tables are created in the sink's --schema.
export default {
  async init(sql) {
    await sql.run('CREATE TABLE flavor_counts (flavor text PRIMARY KEY, ice_creams bigint NOT NULL)');
    await sql.run('CREATE TABLE flavor_members (id text NOT NULL, flavor text NOT NULL, PRIMARY KEY (id, flavor))');
  },
  async handle(event, sql) {
    const type = event.header?.eventName?.[0];
    const id = event.header?.rel?.id;
    if (!id || !['create.ice_cream', 'update.ice_cream', 'delete.ice_cream'].includes(type)) return;
    const flavors = type === 'delete.ice_cream' ? [] : event.payload?.flavors;
    if (!Array.isArray(flavors)) return;
    await sql.run(
      'UPDATE flavor_counts SET ice_creams = ice_creams - 1 WHERE flavor IN (SELECT flavor FROM flavor_members WHERE id = $1)',
      id,
    );
    await sql.run('DELETE FROM flavor_members WHERE id = $1', id);
    for (const flavor of new Set(flavors)) {
      await sql.run('INSERT INTO flavor_members (id, flavor) VALUES ($1, $2)', id, flavor);
      await sql.run(
        'INSERT INTO flavor_counts (flavor, ice_creams) VALUES ($1, 1) ON CONFLICT (flavor) DO UPDATE SET ice_creams = flavor_counts.ice_creams + 1',
        flavor,
      );
    }
  },
};
