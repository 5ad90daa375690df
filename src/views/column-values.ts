/**
 * How event values become SQLite values for view columns. Numbers are stored exactly or the event is
 * refused: an integer beyond 2^53 (kept by the reader as a LosslessNumber) binds as a BigInt, which
 * SQLite holds exactly up to 2^63-1; a number no SQLite number holds exactly (beyond 64 bits, 1e400,
 * -0, more digits than a double) is stored as its text in untyped, text and json columns, and refused
 * in integer and real columns and increments.
 */
import type { ColumnType } from './definition.js';
import { LosslessNumber, stringifyJson } from '../core/json.js';

export type SqlValue = string | number | bigint | null;
export type Convert = (value: unknown, where: string) => SqlValue;

/** An event one view cannot apply; reported through the error policy, never fatal by itself. */
export class BadEvent extends Error {}

/** A value in a message, cut to 60 characters. */
export function describe(value: unknown): string {
  const text = stringifyJson(value) ?? String(value);
  return text.length > 60 ? `${text.slice(0, 60)}…` : text;
}

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
const INTEGER_TEXT = /^-?(0|[1-9]\d*)$/;

/** The integer a text holds when SQLite can store it exactly (written as an integer, within 64 bits, not -0). */
function exactInteger(text: string): bigint | undefined {
  if (!INTEGER_TEXT.test(text) || text === '-0') return undefined;
  const n = BigInt(text);
  return n >= INT64_MIN && n <= INT64_MAX ? n : undefined;
}

/** A value for an untyped column: whole numbers bind as SQLite integers (a JS number would bind as REAL). */
export function plain(value: unknown): SqlValue {
  if (value === null || typeof value === 'string') return value;
  if (typeof value === 'number') return Number.isSafeInteger(value) ? BigInt(value) : value;
  if (typeof value === 'boolean') return value ? 1n : 0n;
  if (typeof value === 'bigint') return value;
  if (value instanceof LosslessNumber) return exactInteger(value.text) ?? value.text;
  return stringifyJson(value) ?? null;
}

function numeric(value: unknown, where: string, integer: boolean): SqlValue {
  if (value instanceof LosslessNumber) return exactNumber(value.text, where, integer);
  let n: number;
  if (typeof value === 'number') n = value;
  else if (typeof value === 'boolean') n = value ? 1 : 0;
  else if (typeof value === 'string' && value.trim() !== '' && Number.isFinite(Number(value))) {
    if (integer && !Number.isSafeInteger(Number(value))) return exactNumber(value.trim(), where, integer);
    n = Number(value);
  } else throw new BadEvent(`${where}: expected ${integer ? 'an integer' : 'a number'}, got ${describe(value)}`);
  if (integer && !Number.isInteger(n)) throw new BadEvent(`${where}: expected an integer, got ${describe(value)}`);
  return n;
}

/** A number a double cannot carry: an exact 64-bit integer for integer columns, else refused. */
function exactNumber(text: string, where: string, integer: boolean): SqlValue {
  const n = exactInteger(text);
  if (integer) {
    if (n === undefined) throw new BadEvent(`${where}: ${text} is not an integer SQLite can hold exactly (from -2^63 to 2^63-1); store it in a text or untyped column`);
    return n;
  }
  throw new BadEvent(`${where}: ${text} cannot be stored exactly as a real; store it in an integer (whole numbers), text or untyped column`);
}

export const CONVERTERS: Record<ColumnType | 'any', Convert> = {
  any: plain,
  text: (v) => (v === null || typeof v === 'string' ? v : v instanceof LosslessNumber ? v.text : typeof v === 'object' ? (stringifyJson(v) ?? null) : String(v)),
  integer: (v, where) => (v === null ? null : numeric(v, where, true)),
  real: (v, where) => (v === null ? null : numeric(v, where, false)),
  json: (v) => (v === null ? null : (stringifyJson(v) ?? null)),
  boolean: (v, where) => {
    if (v === null) return null;
    if (v === true || v === 1 || v === 'true') return 1;
    if (v === false || v === 0 || v === 'false') return 0;
    throw new BadEvent(`${where}: expected a boolean, got ${describe(v)}`);
  },
};

/** The converter for an increment's amount: like the column's, but a number kept as text cannot be added. */
export function amountConverter(type: ColumnType | 'any'): Convert {
  const convert = CONVERTERS[type];
  return (v, where) => {
    if (v instanceof LosslessNumber && exactInteger(v.text) === undefined) {
      throw new BadEvent(`${where}: ${v.text} cannot be added exactly (only integers from -2^63 to 2^63-1 and numbers a double holds can)`);
    }
    return convert(v, where);
  };
}

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** A value read from an incremented column (integers as BigInt; NULL counts as 0), or undefined when it holds no number. */
function storedNumber(value: unknown): bigint | number | undefined {
  if (value === null) return 0n;
  return typeof value === 'bigint' || typeof value === 'number' ? value : undefined;
}

/**
 * An increment's sum, as SQLite would compute it but never changed silently: SQLite turns an integer
 * sum beyond 2^63-1 into a rounded REAL without a word; here that is a bad event.
 * Integers come in as BigInt (the SQL function is registered with safe integers).
 */
export function exactSum(current: unknown, amount: unknown, where: string): bigint | number {
  const a = storedNumber(current);
  if (a === undefined) throw new BadEvent(`${where}: the column holds ${describe(current)}, which is not a number to add to`);
  const b = storedNumber(amount) ?? 0n;
  if (typeof a === 'bigint' && typeof b === 'bigint') {
    const sum = a + b;
    if (sum < INT64_MIN || sum > INT64_MAX) throw new BadEvent(`${where}: ${a} + ${b} is beyond the integers SQLite holds exactly (from -2^63 to 2^63-1)`);
    return sum;
  }
  for (const v of [a, b]) {
    if (typeof v === 'bigint' && (v > MAX_SAFE || v < -MAX_SAFE)) throw new BadEvent(`${where}: ${a} + ${b} cannot be added exactly (a real and an integer beyond 2^53)`);
  }
  return Number(a) + Number(b);
}

/** A parameter a handler module passes to its SQL helper, as SQLite can bind it. */
export function bindable(p: unknown): unknown {
  if (p === undefined) return null;
  if (typeof p === 'boolean') return p ? 1 : 0;
  return p instanceof LosslessNumber ? plain(p) : p;
}
