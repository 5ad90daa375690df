import { KinesisClient } from '@aws-sdk/client-kinesis';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { CqpError } from '../core/errors.js';

/** Where a Kinesis client points: an explicit endpoint (kinesalite, LocalStack) or AWS itself. */
export interface KinesisTarget {
  endpoint?: string | undefined;
  region?: string | undefined;
  /** Attempts the SDK makes per call before our own retry loops see the error (SDK default 3). */
  maxAttempts?: number | undefined;
}

/** The region to use: the option, else AWS_REGION / AWS_DEFAULT_REGION, else us-east-1. */
export function resolveRegion(region: string | undefined): string {
  return region || process.env['AWS_REGION'] || process.env['AWS_DEFAULT_REGION'] || 'us-east-1';
}

/** Builds a Kinesis client; credentials come from the usual AWS chain (env, profile, instance role). */
export function createKinesisClient(target: KinesisTarget): KinesisClient {
  // cqp supports Node 20; the SDK's "upgrade to Node 22" notice would otherwise land on every stage's stderr.
  process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] ??= 'true';
  const region = resolveRegion(target.region);
  if (target.endpoint === undefined) {
    return new KinesisClient({ region, ...(target.maxAttempts ? { maxAttempts: target.maxAttempts } : {}) });
  }
  let url: URL;
  try {
    url = new URL(target.endpoint);
  } catch {
    throw new CqpError('USAGE', `--endpoint "${target.endpoint}" is not a URL; give one such as http://127.0.0.1:4567`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new CqpError('USAGE', `--endpoint "${target.endpoint}" must start with http:// or https://`);
  }
  return new KinesisClient({
    region,
    endpoint: target.endpoint,
    // The SDK speaks HTTP/2 by default; kinesalite and most local stand-ins speak HTTP/1.1 only.
    // Timeouts so that a stand-in that stops answering fails the call (and it is retried) instead of hanging.
    requestHandler: new NodeHttpHandler({ connectionTimeout: 5000, requestTimeout: 60_000 }),
    ...(target.maxAttempts ? { maxAttempts: target.maxAttempts } : {}),
  });
}

/** Names the Kinesis endpoint for messages: the given URL, or the AWS endpoint of the region. */
export function describeTarget(target: KinesisTarget): string {
  const region = resolveRegion(target.region);
  const where = target.endpoint ?? `https://kinesis.${region}.amazonaws.com`;
  return `${where} (region ${region})`;
}

/** The AWS error name of a thrown value (`ResourceNotFoundException`, …), or '' when it has none. */
export function awsErrorName(error: unknown): string {
  if (error && typeof error === 'object' && 'name' in error && typeof error.name === 'string') return error.name;
  return '';
}

/** Error for a stream the endpoint does not know. */
export function streamNotFound(stream: string, target: KinesisTarget, cause: unknown): CqpError {
  return new CqpError(
    'IO',
    `Kinesis stream "${stream}" not found at ${describeTarget(target)}; check --stream, --endpoint and --region, or create the stream`,
    { cause },
  );
}
