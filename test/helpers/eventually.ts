/** Thrown by an `eventually` check that knows it can never pass (the process it waits on has exited): fails at once. */
export class GiveUp extends Error {}

/**
 * Polls `check` until it returns a value other than false/undefined, or fails after `timeoutMs` with
 * `what` (and the last error `check` threw), well before the test's own timeout would end it without a
 * word. Tests wait for events with it, never with bare sleeps.
 */
export async function eventually<T>(check: () => T | false | undefined | Promise<T | false | undefined>, options: { timeoutMs?: number | undefined; what: string | (() => string); everyMs?: number }): Promise<T> {
  const timeoutMs = options.timeoutMs ?? 30_000;
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== false && value !== undefined) return value;
    } catch (error) {
      if (error instanceof GiveUp) throw error;
      last = error;
    }
    if (Date.now() > deadline) {
      const why = last instanceof Error ? ` (last error: ${last.message})` : '';
      const what = typeof options.what === 'function' ? options.what() : options.what;
      throw new Error(`not within ${timeoutMs / 1000} s: ${what}${why}`);
    }
    await new Promise((resolve) => setTimeout(resolve, options.everyMs ?? 50));
  }
}
