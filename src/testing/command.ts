/**
 * `cqp test [FILE|DIR…]`: runs pipeline test files and prints a line per test, the failures with their
 * diffs, and `N passed, M failed`. Exit 0 when every test passes, 1 when one fails, 2 when a file does
 * not load (it is reported, and the other files still run).
 */
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { CqpError, messageOf } from '../core/errors.js';
import { lineOf } from '../views/yaml-location.js';
import { formatYamlPath } from '../views/yaml-location.js';
import { checkExpectations, type Failure } from './expectations.js';
import { loadTestFile, type LoadedTest, type LoadedTestFile } from './load.js';
import { runPipelineTest, type RunProgress } from './run-test.js';

const SUFFIX = '.test.yaml';

/** Every `*.test.yaml` under `dir`, skipping node_modules and hidden folders. */
function findTestFiles(dir: string, out: string[]): void {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) {
      if (entry.name !== 'node_modules' && !entry.name.startsWith('.')) findTestFiles(path, out);
    } else if (entry.name.endsWith(SUFFIX)) {
      out.push(path);
    }
  }
}

/** The test files the arguments name: files as given, folders searched; the current folder when none is given. */
function testFiles(args: string[]): string[] {
  const files: string[] = [];
  for (const arg of args.length > 0 ? args : ['.']) {
    let isDir: boolean;
    try {
      isDir = statSync(arg).isDirectory();
    } catch {
      throw new CqpError('USAGE', `${arg}: no such file or folder`);
    }
    if (!isDir) {
      files.push(arg);
      continue;
    }
    const found: string[] = [];
    findTestFiles(arg, found);
    if (found.length === 0) throw new CqpError('USAGE', `no *${SUFFIX} file under ${arg === '.' ? 'the current folder' : arg}`);
    files.push(...found.sort());
  }
  return files.map((f) => (f.startsWith('/') ? f : relative('.', f) || f));
}

interface Printer {
  out: (line: string) => void;
  err: (line: string) => void;
}

/** Runs one test on fresh temporary stores, for at most `timeoutMs`; its failures (a component that failed is one too). */
async function runOne(file: LoadedTestFile, loaded: LoadedTest, timeoutMs: number): Promise<{ failures: Failure[]; warnings: string[] }> {
  const tmp = mkdtempSync(join(tmpdir(), 'cqp-test-'));
  const controller = new AbortController();
  const progress: RunProgress = { component: '' };
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => {
      reject(new CqpError('STAGE', `timed out after ${timeoutMs / 1000} s, in ${progress.component} (a run: program must exit at the end of its input)`));
      controller.abort();
    }, timeoutMs);
  });
  const running = runPipelineTest(file.plan, loaded, tmp, controller.signal, progress);
  // Once the test has timed out, what the stopped run ends with is of no interest.
  running.catch(() => undefined);
  try {
    const run = await Promise.race([running, timedOut]);
    return { failures: checkExpectations(loaded, run), warnings: run.warnings };
  } catch (error) {
    return { failures: [{ path: loaded.at, message: messageOf(error), diff: [] }], warnings: [] };
  } finally {
    clearTimeout(timer);
    controller.abort();
    rmSync(tmp, { recursive: true, force: true });
  }
}

function printFailure(file: LoadedTestFile, failure: Failure, print: Printer): void {
  const line = lineOf(file.doc, failure.path);
  const field = formatYamlPath(failure.path);
  print.out(`    ${file.file}${line === undefined ? '' : `:${line}`}: ${field ? `${field}: ` : ''}${failure.message.replace(/\n/g, '\n      ')}`);
  for (const d of failure.diff) print.out(`      ${d}`);
}

/** Runs the test files `args` names, each test for at most `timeoutMs`; returns the exit code. */
export async function testCommand(args: string[], timeoutMs: number, print: Printer): Promise<number> {
  const files = testFiles(args);
  let passed = 0;
  let failed = 0;
  let malformed = 0;
  for (const name of files) {
    let file: LoadedTestFile;
    try {
      file = await loadTestFile(name);
    } catch (error) {
      if (!(error instanceof CqpError)) throw error;
      print.err(error.message.startsWith(name) ? error.message : `${name}: ${error.message}`);
      malformed++;
      continue;
    }
    print.out(file.file);
    for (const loaded of file.tests) {
      const started = performance.now();
      const { failures, warnings } = await runOne(file, loaded, timeoutMs);
      const ms = Math.round(performance.now() - started);
      print.out(`  ${failures.length === 0 ? 'passed' : 'FAILED'}  ${loaded.test.name} (${ms} ms)`);
      if (failures.length === 0) {
        passed++;
        continue;
      }
      failed++;
      for (const failure of failures) printFailure(file, failure, print);
      for (const warning of warnings.slice(0, 10)) print.out(`    warning: ${warning}`);
    }
  }
  print.out(`${passed} passed, ${failed} failed${malformed > 0 ? ` (${malformed} file${malformed === 1 ? '' : 's'} did not load)` : ''}`);
  return malformed > 0 ? 2 : failed > 0 ? 1 : 0;
}
