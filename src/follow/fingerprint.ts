import { createHash } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';

/** At most this many bytes of the first line identify a file. */
export const FINGERPRINT_BYTES = 4096;

/**
 * A followed file is identified by its content, not by its name or inode: names change on rotation,
 * and inodes are reused and differ between a file and its copy. The fingerprint is 16 hex digits of
 * SHA-256 over the file's first line without its newline, cut at 4 KiB. It is known once that line is
 * complete (or 4 KiB long), never changes while the file only grows, and changes when the file is
 * truncated and rewritten (a new first line). Two files that begin with the same line share a
 * fingerprint: event lines carry ids and timestamps, so in practice they do not; a file truncated and
 * rewritten with its old first line is taken for the old file.
 *
 * Returns undefined while the first line is still incomplete, unless `final` (the file will not
 * grow: then everything there is the first line).
 */
export function fingerprintOfHead(head: Buffer, final: boolean): string | undefined {
  const nl = head.indexOf(10);
  let end: number;
  if (nl >= 0 && nl < FINGERPRINT_BYTES) end = nl;
  else if (head.length >= FINGERPRINT_BYTES) end = FINGERPRINT_BYTES;
  else if (final && head.length > 0) end = head.length;
  else return undefined;
  return createHash('sha256').update(head.subarray(0, end)).digest('hex').slice(0, 16);
}

/** The fingerprint of an open file (see `fingerprintOfHead`). */
export async function fingerprintOf(fh: FileHandle, final = false): Promise<string | undefined> {
  const head = Buffer.alloc(FINGERPRINT_BYTES);
  const { bytesRead } = await fh.read(head, 0, FINGERPRINT_BYTES, 0);
  return fingerprintOfHead(head.subarray(0, bytesRead), final);
}
