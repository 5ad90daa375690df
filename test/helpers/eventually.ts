/**
 * Polls `check` until it returns true, failing after `timeoutMs` with `what` (a function: worded when it
 * fails, with the state then) and the last check's error, if it threw: tests wait for an event with a deadline and a message, never for a fixed time.
 */
export async function eventually(check: () => boolean | Promise<boolean>, { timeoutMs = 30_000, what, everyMs = 20 }: { timeoutMs?: number; what: string | (() => string); everyMs?: number }): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      if (await check()) return;
      last = undefined;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) {
      const why = last === undefined ? '' : ` (last check: ${last instanceof Error ? last.message : String(last)})`;
      throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${typeof what === 'string' ? what : what()}${why}`);
    }
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}
