import { setTimeout as sleep } from 'node:timers/promises';
import * as z from 'zod';
import { defineSource } from '../core/component.js';
import { resumeAt, stampJson } from '../core/position.js';
import { seededRandom } from '../core/random.js';

const NAMES = [
  'Vanilla Toffee Bar Crunch', 'Chocolate Fudge Brownie', 'Cherry Garcia', 'Phish Food', 'Half Baked',
  'Chunky Monkey', 'Cookie Dough', 'Strawberry Cheesecake', 'Americone Dream', 'Salted Caramel Core',
  'Mint Chocolate Cookie', 'Peanut Butter Cup', 'Coffee Caramel Buzz', 'Pistachio Pistachio', 'Milk & Cookies',
];
const FLAVORS = ['vanilla', 'chocolate', 'toffee', 'cherry', 'caramel', 'mint', 'coffee', 'peanut', 'strawberry', 'fudge'];
const START = Date.parse('2022-05-30T08:49:46.745Z');
const BATCH = 200;

function uuid(random: () => number): string {
  const hex = (n: number): string => Math.floor(random() * 16 ** n).toString(16).padStart(n, '0');
  return `${hex(8)}-${hex(4)}-4${hex(3)}-${(8 + Math.floor(random() * 4)).toString(16)}${hex(3)}-${hex(6)}${hex(6)}`;
}

interface Entity {
  id: string;
  productId: string;
  alive: boolean;
}

/** Makes the seed-shaped event stream: create, update, sale and delete of a fixed set of ice creams. */
export function demoEvents(seed: number, entities: number): () => Record<string, unknown> {
  const random = seededRandom(seed);
  const pool: Entity[] = Array.from({ length: entities }, (_, i) => ({ id: uuid(random), productId: String(100 + i), alive: false }));
  let index = 0;
  return () => {
    const entity = pool[Math.floor(random() * pool.length)] as Entity;
    const r = random();
    const kind = !entity.alive ? 'create' : r < 0.45 ? 'update' : r < 0.9 ? 'sale' : 'delete';
    const created = new Date(START + index * 1000 + Math.floor(random() * 1000)).toISOString();
    index++;
    const name = NAMES[Math.floor(random() * NAMES.length)] as string;
    const price = Math.round((1 + random() * 9) * 100) / 100;
    const flavors = [FLAVORS[Math.floor(random() * FLAVORS.length)], FLAVORS[Math.floor(random() * FLAVORS.length)]];
    let payload: Record<string, unknown>;
    if (kind === 'create' || kind === 'update') {
      payload = { name, productId: entity.productId, price, flavors, description: `${name}: ${flavors.join(' and ')} ice cream, a pint of it`, dairyFree: random() < 0.2 };
    } else if (kind === 'sale') {
      payload = { productId: entity.productId, qty: 1 + Math.floor(random() * 5), price };
    } else {
      payload = { productId: entity.productId };
    }
    entity.alive = kind !== 'delete';
    const eventType = kind === 'sale' ? 'update' : kind;
    return {
      header: {
        eventId: `events/${uuid(random)}`,
        eventType: [eventType],
        eventName: [`${kind}.ice_cream`],
        createdTimestamp: created,
        rel: { id: entity.id, schemaVersion: `/schemas/ice_cream/messages/${kind}/0.0.1` },
      },
      payload,
    };
  };
}

export default defineSource({
  name: 'demo',
  summary: 'generate seed-shaped ice-cream events (create, update, sale, delete) for demos and benchmarks',
  description:
    'A repeatable stream: the same --seed gives the same events, timestamps included, so a restart resumes ' +
    'exactly (positions are demo:<seed>:<index>). Events are about 400 bytes in the built-in envelope (see cqp filter validate --help), ' +
    'over --entities ice creams: create.ice_cream, update.ice_cream, sale.ice_cream (payload.qty) and ' +
    'delete.ice_cream. --count 0 runs until stopped; --rate 0 runs as fast as the consumer reads.',
  options: z.object({
    count: z.number().int().min(0).default(10_000).describe('how many events (0 = no end)'),
    rate: z.number().min(0).default(0).describe('events per second (0 = as fast as possible)'),
    seed: z.number().int().default(1).describe('seed of the stream'),
    entities: z.number().int().positive().default(2000).describe('how many distinct ice creams'),
  }),
  resumable: true,
  examples: [{ count: 1000 }, { count: 0, rate: 1000, seed: 7 }],
  create({ count, rate, seed, entities }, ctx) {
    const source = `demo:${seed}`;
    const next = demoEvents(seed, entities);
    const applied = ctx.resume[source];
    let first = 0;
    if (applied !== undefined) {
      const at = resumeAt(applied);
      first = Number(at.n) + (at.inclusive ? 0 : 1);
    }
    return {
      async *batches() {
        for (let i = 0; i < first && (count === 0 || i < count); i++) next();
        // About 80 KB a batch: bigger ones land in V8's large-object space, an mmap each (see READ_CHUNK_BYTES).
        const batchSize = rate > 0 ? Math.max(1, Math.min(BATCH, Math.ceil(rate / 100))) : BATCH;
        const started = Date.now();
        let i = first;
        while ((count === 0 || i < count) && !ctx.signal.aborted) {
          const lines: string[] = [];
          const end = count === 0 ? i + batchSize : Math.min(count, i + batchSize);
          for (; i < end; i++) lines.push(stampJson(JSON.stringify(next()), { source, n: String(i) }));
          yield { lines };
          if (rate > 0) {
            const due = started + ((i - first) / rate) * 1000;
            const wait = due - Date.now();
            if (wait > 0) await sleep(wait, undefined, { signal: ctx.signal }).catch(() => undefined);
          }
        }
      },
    };
  },
});
