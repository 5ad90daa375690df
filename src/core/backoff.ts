/**
 * The one retry delay policy: exponential backoff with jitter, used wherever cqp tries again (Kinesis
 * calls that fail for a moment, the supervisor restarting a crashed stage). Jitter keeps many retries
 * from landing on a service at the same moment.
 */

/** The delay before retry number `attempt` (0 first): up to `baseMs`, doubling to `maxMs`, never under half of that. */
export function backoffMs(attempt: number, baseMs = 100, maxMs = 5000): number {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 20));
  return Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
}

/** Waits `ms`, or less when `signal` aborts (resolves false then). */
export function sleep(ms: number, signal?: AbortSignal): Promise<boolean> {
  return new Promise((resolve) => {
    if (signal?.aborted) {
      resolve(false);
      return;
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve(true);
    }, ms);
    const onAbort = (): void => {
      clearTimeout(timer);
      resolve(false);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
