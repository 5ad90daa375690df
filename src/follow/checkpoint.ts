import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { CqpError, messageOf } from '../core/errors.js';

/** Where a standalone `file` source stopped: the file (by fingerprint) and the offset to read on from. */
export interface FileCheckpoint {
  fingerprint: string;
  /** Byte offset of the first line not yet handed out. */
  offset: number;
}

/** Reads a checkpoint file; undefined when it does not exist yet. */
export function readCheckpoint(file: string): FileCheckpoint | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new CqpError('IO', `cannot read checkpoint ${file}: ${messageOf(error)}`, { cause: error });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    value = undefined;
  }
  const cp = value as Partial<FileCheckpoint> | undefined;
  if (!cp || typeof cp.fingerprint !== 'string' || !Number.isSafeInteger(cp.offset) || (cp.offset as number) < 0) {
    throw new CqpError('IO', `checkpoint ${file} is not a file-source checkpoint ({"fingerprint": "…", "offset": N}); delete it to start over`);
  }
  return { fingerprint: cp.fingerprint, offset: cp.offset as number };
}

/**
 * Saves checkpoints atomically (temp file + rename). `prepare` writes the temp file before a batch is
 * handed out and `commit` renames it once the batch is taken, so the gap between the output and the
 * checkpoint is one rename.
 */
export class CheckpointWriter {
  private readonly temp: string;
  private prepared = false;

  /** Creates the checkpoint's folder when missing (`--checkpoint state/app.checkpoint` on a first run). */
  constructor(readonly file: string) {
    this.temp = `${file}.tmp`;
    try {
      mkdirSync(dirname(file), { recursive: true });
    } catch (error) {
      throw new CqpError('IO', `cannot write checkpoint ${file}: cannot create its folder (${messageOf(error)}); check the path`, { cause: error });
    }
  }

  /** File names the checkpoint writes, beside its own. */
  get names(): string[] {
    return [this.file, this.temp];
  }

  prepare(cp: FileCheckpoint): void {
    try {
      writeFileSync(this.temp, `${JSON.stringify(cp)}\n`);
    } catch (error) {
      throw new CqpError('IO', `cannot write checkpoint ${this.temp}: ${messageOf(error)} (check that its folder exists and is writable)`, { cause: error });
    }
    this.prepared = true;
  }

  /** Makes the last prepared checkpoint the current one; a no-op when none is pending. */
  commit(): void {
    if (!this.prepared) return;
    this.prepared = false;
    try {
      renameSync(this.temp, this.file);
    } catch (error) {
      throw new CqpError('IO', `cannot write checkpoint ${this.file}: ${messageOf(error)}`, { cause: error });
    }
  }
}
