import { describe, expect, it } from 'vitest';
import { backoffMs, sleep } from '../../src/core/backoff.js';

describe('backoffMs', () => {
  it.each([
    [0, 50, 100],
    [1, 100, 200],
    [3, 400, 800],
    [6, 2500, 5000],
    [40, 2500, 5000],
  ])('attempt %i waits between %i and %i ms', (attempt, low, high) => {
    for (let i = 0; i < 50; i++) {
      const ms = backoffMs(attempt);
      expect(ms).toBeGreaterThanOrEqual(low);
      expect(ms).toBeLessThanOrEqual(high);
    }
  });
});

describe('sleep', () => {
  it('resolves false at once when its signal aborts', async () => {
    const abort = new AbortController();
    const waiting = sleep(60_000, abort.signal);
    abort.abort();
    expect(await waiting).toBe(false);
  });
});
