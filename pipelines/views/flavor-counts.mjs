// A view kept by code: how many ice creams currently list each flavour.
// cqp calls init(sql) once when the view is built (create its tables there) and handle(event, sql)
// for every event, inside the batch's transaction; sql has run/get/all. Keep handle synchronous.
export default {
  init(sql) {
    sql.run('CREATE TABLE flavor_counts (flavor TEXT PRIMARY KEY, ice_creams INTEGER NOT NULL)');
    sql.run('CREATE TABLE flavor_members (id TEXT NOT NULL, flavor TEXT NOT NULL, PRIMARY KEY (id, flavor))');
  },
  handle(event, sql) {
    const type = event.header?.eventName?.[0];
    const id = event.header?.rel?.id;
    if (!id || !['create.ice_cream', 'update.ice_cream', 'delete.ice_cream'].includes(type)) return;
    const flavors = type === 'delete.ice_cream' ? [] : event.payload?.flavors;
    if (!Array.isArray(flavors)) return;
    for (const { flavor } of sql.all('SELECT flavor FROM flavor_members WHERE id = ?', id)) {
      sql.run('UPDATE flavor_counts SET ice_creams = ice_creams - 1 WHERE flavor = ?', flavor);
    }
    sql.run('DELETE FROM flavor_members WHERE id = ?', id);
    for (const flavor of new Set(flavors)) {
      sql.run('INSERT INTO flavor_members (id, flavor) VALUES (?, ?)', id, flavor);
      sql.run(
        'INSERT INTO flavor_counts (flavor, ice_creams) VALUES (?, 1) ON CONFLICT (flavor) DO UPDATE SET ice_creams = ice_creams + 1',
        flavor,
      );
    }
  },
};
