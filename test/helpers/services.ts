import { Socket } from 'node:net';
import { randomBytes } from 'node:crypto';

/** The servers the scale-out tests use: real ones on loopback, never mocks. */
export const SERVICES = {
  nats: { host: '127.0.0.1', port: 4222, what: 'a NATS server with JetStream' },
  postgres: { host: '127.0.0.1', port: 5432, what: 'PostgreSQL' },
} as const;

export type ServiceName = keyof typeof SERVICES;

function reachable(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = new Socket();
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('error', () => done(false));
    socket.connect(port, host, () => done(true));
  });
}

/**
 * Whether a test file may use `name`'s server. Without it the file's tests skip, after one line saying
 * why; with CQP_REQUIRE_SERVICES=1 (as CI sets) a missing server is an error instead, so CI cannot pass by
 * skipping. Use at the top of a test file: `const up = await service('postgres')` then
 * `describe.skipIf(!up)(…)`.
 */
export async function service(name: ServiceName): Promise<boolean> {
  const { host, port, what } = SERVICES[name];
  if (await reachable(host, port, 2000)) return true;
  const why = `${what} is not reachable on ${host}:${port}`;
  if (process.env.CQP_REQUIRE_SERVICES === '1') throw new Error(`${why}, and CQP_REQUIRE_SERVICES=1 requires it`);
  console.log(`skipping the ${name} tests: ${why}`);
  return false;
}

/** A name no other test (or earlier run) uses, for a stream, schema or database object: `prefix_<hex>`. */
export function uniqueName(prefix: string): string {
  return `${prefix}_${process.pid}_${randomBytes(4).toString('hex')}`;
}
