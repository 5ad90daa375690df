/** A pipeline file's text: `run:` command lines split as a shell would, and `${VAR}` expanded. */
import { messageOf } from '../core/errors.js';
import type { Problem } from './checks.js';

/** Splits a command line the way a POSIX shell splits words (quotes and backslashes; no expansion). */
export function splitCommandLine(line: string): string[] {
  const words: string[] = [];
  let word = '';
  let inWord = false;
  let quote: '"' | "'" | undefined;
  for (let i = 0; i < line.length; i++) {
    const c = line[i] as string;
    if (quote === "'") {
      if (c === "'") quote = undefined;
      else word += c;
    } else if (quote === '"') {
      if (c === '"') quote = undefined;
      else if (c === '\\' && i + 1 < line.length && '"\\$`'.includes(line[i + 1] as string)) word += line[++i];
      else word += c;
    } else if (c === "'" || c === '"') {
      quote = c;
      inWord = true;
    } else if (c === '\\' && i + 1 < line.length) {
      word += line[++i];
      inWord = true;
    } else if (/\s/.test(c)) {
      if (inWord) words.push(word);
      word = '';
      inWord = false;
    } else {
      word += c;
      inWord = true;
    }
  }
  if (quote) throw new Error(`unclosed ${quote} quote`);
  if (inWord) words.push(word);
  return words;
}

const VAR = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g;

/** Expands `${VAR}` and `${VAR:-default}` in one string; throws naming the first unset variable. */
export function expandVariables(text: string, env: NodeJS.ProcessEnv): string {
  return text.replace(VAR, (_match, name: string, fallback: string | undefined) => {
    const value = env[name];
    if (value !== undefined && (value !== '' || fallback === undefined)) return value;
    if (fallback !== undefined) return fallback;
    throw new Error(`environment variable ${name} is not set (set it, or write \${${name}:-default})`);
  });
}

/** Replaces `${VAR}` in every string of a parsed YAML value, reporting unset variables by path. */
export function expandAll(value: unknown, env: NodeJS.ProcessEnv, path: PropertyKey[], problems: Problem[]): unknown {
  if (typeof value === 'string') {
    try {
      return expandVariables(value, env);
    } catch (error) {
      problems.push({ path, message: messageOf(error) });
      return value;
    }
  }
  if (Array.isArray(value)) return value.map((v, i) => expandAll(v, env, [...path, i], problems));
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = expandAll(v, env, [...path, k], problems);
    return out;
  }
  return value;
}
