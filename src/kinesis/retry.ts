/** Which Kinesis errors are worth a retry; the delays between tries are core/backoff.ts's. */
import { awsErrorName } from './client.js';

/** Errors that mean "slow down": retried without limit, with growing delays. */
const THROTTLING = new Set([
  'ProvisionedThroughputExceededException',
  'LimitExceededException',
  'ThrottlingException',
  'KMSThrottlingException',
]);

/** Errors worth a few more tries: the network or the service failing for a moment. */
const TRANSIENT = new Set([
  'InternalFailure',
  'InternalFailureException',
  'ServiceUnavailable',
  'ServiceUnavailableException',
  'TimeoutError',
  'RequestTimeout',
  'RequestTimeoutException',
]);
const TRANSIENT_CODES = new Set(['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', 'EAI_AGAIN']);

/** True for Kinesis throttling errors. */
export function isThrottling(error: unknown): boolean {
  return THROTTLING.has(awsErrorName(error));
}

/** True for errors a retry may cure (throttling, 5xx, dropped connections). */
export function isRetryable(error: unknown): boolean {
  if (isThrottling(error) || TRANSIENT.has(awsErrorName(error))) return true;
  if (error && typeof error === 'object') {
    const code = 'code' in error ? error.code : undefined;
    if (typeof code === 'string' && TRANSIENT_CODES.has(code)) return true;
    const meta = '$metadata' in error ? error.$metadata : undefined;
    if (meta && typeof meta === 'object' && 'httpStatusCode' in meta) {
      const status = meta.httpStatusCode;
      if (typeof status === 'number' && status >= 500) return true;
    }
  }
  return false;
}
