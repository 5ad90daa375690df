/**
 * Polls `check` until it returns a value other than false/undefined, or fails after `timeoutMs` with
 * `what` (and the last error `check` threw). Tests wait for events with it, never with bare sleeps.
 */
export async function eventually<T>(check: () => T | false | undefined | Promise<T | false | undefined>, options: { timeoutMs: number; what: string; everyMs?: number }): Promise<T> {
  const deadline = Date.now() + options.timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== false && value !== undefined) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) {
      const why = last instanceof Error ? ` (last error: ${last.message})` : '';
      throw new Error(`not within ${options.timeoutMs / 1000} s: ${options.what}${why}`);
    }
    await new Promise((resolve) => setTimeout(resolve, options.everyMs ?? 50));
  }
}
