/** The closed set of failure kinds cqp reports; each maps to an exit code. */
export type CqpErrorCode =
  | 'USAGE' // bad command line
  | 'CONFIG' // a pipeline, views or schema file that does not validate
  | 'BAD_INPUT' // a bad line under the `fail` policy
  | 'IO' // a file, pipe or network failure
  | 'CORRUPT' // a command log record that does not check out
  | 'LOCKED' // another writer holds the command log
  | 'PARTS_HELD' // events of a whole source meet positions kept per part of it, which cannot tell which are applied
  | 'FENCED' // a group worker's batch for a partition another worker has taken over (rolled back)
  | 'STAGE'; // a pipeline stage that failed or keeps crashing

/** The one error type of cqp: a code, a message that says how to fix it, and an optional cause. */
export class CqpError extends Error {
  readonly code: CqpErrorCode;

  constructor(code: CqpErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'CqpError';
    this.code = code;
  }
}

/** Exit code for a failure: 2 for usage and configuration errors, 1 for everything else. */
export function exitCodeFor(error: unknown): number {
  if (error instanceof CqpError && (error.code === 'USAGE' || error.code === 'CONFIG')) return 2;
  return 1;
}

/** Message of any thrown value, for diagnostics. */
export function messageOf(error: unknown): string {
  if (error instanceof Error) return error.message;
  return String(error);
}

/** Writes a failed command's message to stderr (`cqp:` in front unless it names itself) and returns its exit code. */
export function reportError(error: unknown): number {
  const message = messageOf(error);
  process.stderr.write(`${message.startsWith('cqp') ? '' : 'cqp: '}${message}\n`);
  return exitCodeFor(error);
}
