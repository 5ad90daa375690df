import { spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { eventually } from '../helpers/eventually.js';
import { SERVICES, service, type ServiceName } from '../helpers/services.js';

/*
 * Every `sh` block of README.md runs, in order, as a new user would run it in a fresh clone, and ends as
 * the text says (exit 0). The blocks run in a temporary copy of what a clone holds that they use
 * (`pipelines/`, `.gitignore`), each in its own `bash` with `set -eo pipefail`.
 *
 * `npx`: the prelude defines a shell function `npx` that runs this checkout's bin/ for `cqp`,
 * `cqp-filter`, `cqp-source` and `cqp-sink`, as npx does inside a clone (a real `npx` in a temporary
 * folder would look the name up in the npm registry). Anything else given to `npx` fails the block.
 *
 * Markers, in the fence's info string (GitHub shows only the language, `sh`):
 *   ```sh needs=WHAT       the block needs something this test does not provide (the network, a Kinesis
 *                          endpoint, a pipeline running in another terminal): skipped, with WHAT as reason.
 *                          WHAT servers of test/helpers/services.ts (`needs=nats`, `needs=postgres`, or
 *                          both: `needs=nats,postgres`): the block runs when they are up (skipped with one
 *                          line otherwise, an error under CQP_REQUIRE_SERVICES=1); the JetStream streams and
 *                          PostgreSQL schemas it names, in its commands or in the pipelines it runs
 *                          (`--pipeline FILE`, `cqp run FILE`), are removed afterwards.
 *   ```sh ctrl-c-after=N   the block runs until Ctrl-C: once it has printed something (it has started),
 *                          it gets N more seconds, then SIGINT goes to its process group, as Ctrl-C on a
 *                          terminal would; it must then stop cleanly (exit 0).
 * Inside a block, a line `# TEXT` of its own (not a comment after a command) shows what the commands
 * print: TEXT must be in the block's output.
 */

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const BIN = join(ROOT, 'bin');

interface Block {
  line: number;
  code: string;
  needs: string | undefined;
  /** The code and the text of the pipeline files it runs: where the streams and schemas it writes are named. */
  names: string;
  ctrlCAfter: number | undefined;
}

/** The README's `sh` blocks, in order, with their markers. */
function shBlocks(markdown: string): Block[] {
  const blocks: Block[] = [];
  const fence = /^```sh([^\n]*)\n([\s\S]*?)^```[ \t]*$/gm;
  for (const m of markdown.matchAll(fence)) {
    const info = m[1] ?? '';
    const attr = (name: string): string | undefined => new RegExp(`\\b${name}=(\\S+)`).exec(info)?.[1];
    const after = attr('ctrl-c-after');
    blocks.push({
      line: markdown.slice(0, m.index).split('\n').length,
      code: m[2] ?? '',
      needs: attr('needs'),
      names: '',
      ctrlCAfter: after === undefined ? undefined : Number(after),
    });
  }
  return blocks;
}

const PRELUDE = `set -eo pipefail
npx() {
  case "$1" in
    cqp|cqp-filter|cqp-source|cqp-sink) local bin="$1"; shift; node "${BIN}/$bin.js" "$@" ;;
    *) echo "npx $1: not one of this checkout's commands" >&2; return 127 ;;
  esac
}
`;

const README = readFileSync(join(ROOT, 'README.md'), 'utf8');
const blocks = shBlocks(README);
const isService = (name: string): name is ServiceName => Object.hasOwn(SERVICES, name);
/** The servers a block needs (`needs=nats,postgres`); other needs are not servers. */
const servers = (b: Block): ServiceName[] => (b.needs ?? '').split(',').filter(isService);
const needsServer = (b: Block, name: ServiceName): boolean => servers(b).includes(name);
/** The servers the blocks need, each checked once: up, or the blocks needing it are skipped. */
const servicesUp = new Map<string, boolean>();
for (const b of blocks) for (const s of servers(b)) if (!servicesUp.has(s)) servicesUp.set(s, await service(s));
const clone = mkdtempSync(join(tmpdir(), 'cqp-readme-'));
cpSync(join(ROOT, 'pipelines'), join(clone, 'pipelines'), { recursive: true, filter: (src) => !src.startsWith(join(ROOT, 'pipelines', 'data')) });
cpSync(join(ROOT, '.gitignore'), join(clone, '.gitignore'));
const git = (args: string[]): string => spawnSync('git', args, { cwd: clone, encoding: 'utf8' }).stdout;
const hasGit = spawnSync('git', ['init', '-q'], { cwd: clone }).status === 0;
const untrackedBefore = hasGit ? git(['status', '--porcelain', '--untracked-files=all']) : '';

afterAll(() => rmSync(clone, { recursive: true, force: true }));

const runnable = (b: Block): boolean =>
  b.needs === undefined || ((b.needs ?? '').split(',').every(isService) && servers(b).every((s) => servicesUp.get(s) === true));
/** A block's code and the pipeline files it runs, read from the clone (one the block writes itself is in its code). */
for (const b of blocks) {
  const files = [...b.code.matchAll(/(?:--pipeline|cqp run) (\S+\.yaml)/g)].map((m) => join(clone, m[1] as string)).filter((f) => existsSync(f));
  b.names = [b.code, ...files.map((f) => readFileSync(f, 'utf8'))].join('\n');
}

/** The JetStream streams the blocks write, removed before (a run killed earlier may have left them) and after. */
async function removeStreams(): Promise<void> {
  const streams = new Set<string>();
  for (const b of blocks.filter((x) => needsServer(x, 'nats') && runnable(x))) for (const m of b.names.matchAll(/nats:\/\/[^/\s]+\/([A-Za-z0-9_-]+)/g)) streams.add(m[1] as string);
  if (streams.size === 0) return;
  const nc = await connect({ servers: `${SERVICES.nats.host}:${SERVICES.nats.port}` });
  const jsm = await jetstreamManager(nc);
  for (const s of streams) await jsm.streams.delete(s).catch(() => undefined);
  await nc.close();
}

/** The schemas the PostgreSQL blocks write, removed before and after, as the streams are. */
async function removeSchemas(): Promise<void> {
  if (servicesUp.get('postgres') !== true) return;
  const names = new Set<string>();
  for (const text of blocks.filter((b) => needsServer(b, 'postgres')).map((b) => b.names)) {
    for (const m of text.matchAll(/(?:--schema |schema: )([A-Za-z_][A-Za-z0-9_]*)/g)) names.add(m[1] as string);
  }
  const { default: pg } = await import('pg');
  const client = new pg.Client({ connectionString: `postgres://postgres@${SERVICES.postgres.host}:${SERVICES.postgres.port}/test` });
  await client.connect();
  try {
    for (const name of names) await client.query(`DROP SCHEMA IF EXISTS "${name}" CASCADE`);
  } finally {
    await client.end();
  }
}

beforeAll(async () => {
  await removeStreams();
  await removeSchemas();
});
afterAll(async () => {
  await removeStreams();
  await removeSchemas();
});

interface Ran {
  code: number | null;
  signal: NodeJS.Signals | null;
  output: string;
}

/** A block that should end by itself and has not by then is killed (with its process group) and fails. */
const BLOCK_DEADLINE_MS = 100_000;
const groups = new Set<number>();

afterAll(() => {
  for (const pgid of groups) {
    try {
      process.kill(-pgid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
});

async function runBlock(block: Block): Promise<Ran> {
  // Its own process group, so a Ctrl-C reaches the block's commands and nothing else.
  const child = spawn('bash', ['-c', PRELUDE + block.code], { cwd: clone, detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1' } });
  const pgid = child.pid;
  if (pgid !== undefined) groups.add(pgid);
  const deadline = setTimeout(() => {
    if (pgid !== undefined) process.kill(-pgid, 'SIGKILL');
  }, BLOCK_DEADLINE_MS);
  let output = '';
  child.stdout.setEncoding('utf8').on('data', (t: string) => (output += t));
  child.stderr.setEncoding('utf8').on('data', (t: string) => (output += t));
  const done = new Promise<Ran>((resolve) =>
    child.on('close', (code, signal) => {
      clearTimeout(deadline);
      if (pgid !== undefined) groups.delete(pgid);
      resolve({ code, signal, output });
    }),
  );
  const ctrlCAfter = block.ctrlCAfter;
  if (ctrlCAfter !== undefined) {
    let ended = false;
    void done.then(() => (ended = true));
    await eventually(() => output.length > 0 || ended, { what: () => `README:${block.line}: the block to start (print something)`, timeoutMs: 30_000 });
    // The README says it runs until Ctrl-C: let it run a little, as a user would, then press Ctrl-C.
    await new Promise((resolve) => setTimeout(resolve, ctrlCAfter * 1000));
    if (!ended && child.pid !== undefined) process.kill(-child.pid, 'SIGINT');
  }
  return done;
}

describe('README.md: every sh block runs as written, in order', () => {
  it('has sh blocks, and every marker is one this test knows', () => {
    expect(blocks.length).toBeGreaterThan(10);
    for (const m of README.matchAll(/^```sh([^\n]*)$/gm)) {
      const unknown = (m[1] ?? '').trim().split(/\s+/).filter((w) => w !== '' && !/^(needs=\S+|ctrl-c-after=\d+)$/.test(w));
      expect(unknown, m[0]).toEqual([]);
    }
  });

  for (const block of blocks) {
    const first = block.code.split('\n').find((l) => l.trim() !== '' && !l.startsWith('#')) ?? '';
    const name = `README:${block.line}: ${first.slice(0, 90)}`;
    if (!runnable(block)) {
      it.skip(`${name} (needs ${block.needs})`, () => {});
      continue;
    }
    it(name, async () => {
      const ran = await runBlock(block);
      expect(ran.code, `README:${block.line} ended with ${ran.signal ?? ran.code}:\n${ran.output}`).toBe(0);
      for (const shown of block.code.split('\n').filter((l) => l.startsWith('# '))) expect(ran.output, `README:${block.line}`).toContain(shown.slice(2));
    }, 120_000);
  }

  it.skipIf(!hasGit)('what the examples wrote is all ignored by git (nothing lands beside the sources)', () => {
    expect(git(['status', '--porcelain', '--untracked-files=all'])).toBe(untrackedBefore);
  });
});
