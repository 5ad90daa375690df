/**
 * A stop asked for (SIGINT, SIGTERM) before a command that drains on a signal has its handlers in place:
 * without a handler Node dies of the signal at once (exit 130 or 143), where a stop a moment later drains
 * and exits 0. The signal is held from the start of such a command and handed to it once it can stop.
 */
let first: NodeJS.Signals | undefined;

function record(signal: NodeJS.Signals): void {
  first ??= signal;
}

/** From now on SIGINT and SIGTERM are remembered, not fatal, until `releaseStopSignals`. */
export function holdStopSignals(): void {
  process.on('SIGINT', record);
  process.on('SIGTERM', record);
}

/**
 * Stops holding the signals; resolves with the first one that came meanwhile, if any. A signal reaches
 * its handler only from the event loop, which synchronous work (reading a pipeline file) may not have
 * let run since: one turn of the loop first, or it would be dropped with the handler.
 */
export async function releaseStopSignals(): Promise<NodeJS.Signals | undefined> {
  await new Promise((resolve) => setImmediate(resolve));
  process.off('SIGINT', record);
  process.off('SIGTERM', record);
  return first;
}
