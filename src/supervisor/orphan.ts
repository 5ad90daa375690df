/** How often the parent is checked (ms): a stop then starts within about a second. */
const PARENT_POLL_MS = 1000;

/**
 * Calls `onOrphaned` once when this process's parent changes: the parent died without passing its
 * signal on (`npx cqp run` killed with SIGTERM ends npm and its shell, not the supervisor under them),
 * and nothing will stop the pipeline otherwise. Returns a function that stops watching.
 */
export function watchParent(onOrphaned: (parent: number) => void, everyMs = PARENT_POLL_MS): () => void {
  const parent = process.ppid;
  const timer = setInterval(() => {
    if (process.ppid === parent) return;
    clearInterval(timer);
    onOrphaned(parent);
  }, everyMs);
  timer.unref();
  return () => clearInterval(timer);
}
