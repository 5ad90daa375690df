/**
 * JSON the way events need it: a nesting limit checked before parsing, and numbers that keep their
 * value. `JSON.parse` turns `9007199254740993` into …992 and `1e400` into Infinity, and `JSON.stringify`
 * writes -0 as 0 and Infinity as null. Most events hold only numbers a double carries exactly, so they
 * take the plain `JSON.parse`/`JSON.stringify` path; one cheap scan per line (which also measures its
 * nesting) picks out the lines that may hold another number, and only those are parsed again here,
 * keeping each such number as a `LosslessNumber` that holds its text and is written back as that text.
 */
/** The deepest nesting of objects and arrays an event may have (the event object itself is level 1). */
export const MAX_NESTING = 512;

/**
 * A number whose value a double cannot carry (more than 15 significant digits that do not round-trip,
 * beyond the double range, or -0). Arithmetic and comparisons see `Number(x)` (through valueOf);
 * `String(x)` is the original text, and serialising an event writes that text back.
 */
export class LosslessNumber {
  constructor(readonly text: string) {}

  valueOf(): number {
    return Number(this.text);
  }

  toString(): string {
    return this.text;
  }

  /** `JSON.stringify` in user code sees the nearest double; cqp's own serialiser writes the text. */
  toJSON(): number {
    sawLossless = true;
    return Number(this.text);
  }
}

/** Set when `JSON.stringify` met a LosslessNumber: that output must be made again, losslessly. */
let sawLossless = false;

/**
 * True when the text nests objects and arrays deeper than `limit`; brackets inside strings do not
 * count. A depth of D needs 2·D brackets, so a line of at most 2·limit+1 characters is never scanned.
 */
export function nestsDeeperThan(text: string, limit = MAX_NESTING): boolean {
  if (text.length <= 2 * limit + 1) return false;
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 34) {
      i = closingQuote(text, i);
    } else if (c === 123 || c === 91) {
      if (++depth > limit) return true;
    } else if (c === 125 || c === 93) {
      depth--;
    }
  }
  return false;
}

/** Index of the quote that closes the string opening at `open` (or the text's length when none does). */
function closingQuote(text: string, open: number): number {
  let at = open;
  for (;;) {
    at = text.indexOf('"', at + 1);
    if (at < 0) return text.length;
    let backslashes = 0;
    while (text.charCodeAt(at - 1 - backslashes) === 92) backslashes++;
    if (backslashes % 2 === 0) return at;
  }
}

export const NESTING_MESSAGE = `nesting deeper than ${MAX_NESTING} levels (the most cqp accepts in an event)`;

/** The bad-line message for a text nested too deep, or undefined (for readers that need no numbers). */
export function nestingError(text: string): string | undefined {
  return nestsDeeperThan(text) ? NESTING_MESSAGE : undefined;
}

/** What `scanJson` finds: nothing to worry about, a number a double may not carry, or nesting too deep. */
export const SCAN_PLAIN = 0;
export const SCAN_UNSAFE_NUMBER = 1;
export const SCAN_TOO_DEEP = 2;

/**
 * One pass over a line (strings skipped with indexOf): is it nested deeper than MAX_NESTING, and does
 * it hold a number token a double may not carry (16 or more digits, an exponent, or a negative zero)?
 * Numbers it lets through have at most 15 significant digits, no exponent and a magnitude between
 * 1e-15 and 1e15, which a double carries exactly. Meant for text that JSON.parse accepts.
 */
export function scanJson(text: string): number {
  const len = text.length;
  let depth = 0;
  let found = SCAN_PLAIN;
  for (let i = 0; i < len; i++) {
    const c = text.charCodeAt(i);
    if (c === 34) {
      i = closingQuote(text, i);
    } else if (c === 123 || c === 91) {
      if (++depth > MAX_NESTING) return SCAN_TOO_DEEP;
    } else if (c === 125 || c === 93) {
      depth--;
    } else if ((c >= 48 && c <= 57) || c === 45) {
      const end = numberEnd(text, i);
      if (found === SCAN_PLAIN && mayBeUnsafe(text, i, end)) found = SCAN_UNSAFE_NUMBER;
      i = end - 1;
    }
  }
  return found;
}

/** Index just after the number token starting at `start`. */
function numberEnd(text: string, start: number): number {
  let i = start + 1;
  for (;;) {
    const d = text.charCodeAt(i);
    if ((d >= 48 && d <= 57) || d === 46 || d === 45 || d === 43 || d === 101 || d === 69) i++;
    else return i;
  }
}

/** True for a token with 16 or more digits, an exponent, or no digit but zeros after a minus. */
function mayBeUnsafe(text: string, start: number, end: number): boolean {
  let digits = 0;
  let nonZero = false;
  for (let i = start; i < end; i++) {
    const d = text.charCodeAt(i);
    if (d === 101 || d === 69) return true;
    if (d >= 48 && d <= 57) {
      digits++;
      if (d !== 48) nonZero = true;
    }
  }
  return digits >= 16 || (text.charCodeAt(start) === 45 && !nonZero);
}

/**
 * Parses JSON text; numbers a double cannot carry become LosslessNumbers. Throws like JSON.parse, and
 * on nesting deeper than MAX_NESTING. `scan` is scanJson's answer when the caller has it already.
 */
export function parseJson(text: string, scan = scanJson(text)): unknown {
  if (scan === SCAN_TOO_DEEP) throw new Error(NESTING_MESSAGE);
  const value: unknown = JSON.parse(text);
  return scan === SCAN_UNSAFE_NUMBER ? new LosslessParser(text).parse() : value;
}

const DECIMAL = /^(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/;

/** `<sign><digits>e<exponent>` with no leading or trailing zeros in the digits: equal values, equal forms. */
function canonical(text: string): string {
  const m = DECIMAL.exec(text);
  if (!m) return text;
  const fraction = m[3] ?? '';
  let digits = `${m[2] ?? ''}${fraction}`;
  let exponent = Number(m[4] ?? 0) - fraction.length;
  let start = 0;
  while (start < digits.length - 1 && digits.charCodeAt(start) === 48) start++;
  let end = digits.length;
  while (end > start + 1 && digits.charCodeAt(end - 1) === 48) {
    end--;
    exponent++;
  }
  digits = digits.slice(start, end);
  return `${m[1] ?? ''}${digits}e${digits === '0' ? 0 : exponent}`;
}

/** True when the double nearest to `text` has the same value (and sign) as the text. */
function carriesExactly(text: string, n: number): boolean {
  if (!Number.isFinite(n)) return false;
  if (n === 0) return text.charCodeAt(0) !== 45 && canonical(text) === '0e0';
  return canonical(text) === canonical(String(n));
}

/**
 * A small recursive-descent parser for text `JSON.parse` has accepted already (so it checks little),
 * nested at most MAX_NESTING deep (checked before parsing). Strings with escapes are decoded by
 * JSON.parse itself.
 */
class LosslessParser {
  private i = 0;

  constructor(private readonly s: string) {}

  parse(): unknown {
    return this.value();
  }

  private skipSpace(): number {
    const s = this.s;
    let c = s.charCodeAt(this.i);
    while (c === 32 || c === 9 || c === 10 || c === 13) c = s.charCodeAt(++this.i);
    return c;
  }

  private value(): unknown {
    const c = this.skipSpace();
    if (c === 123) return this.object();
    if (c === 91) return this.array();
    if (c === 34) return this.string();
    if (c === 116) return this.literal(4, true);
    if (c === 102) return this.literal(5, false);
    if (c === 110) return this.literal(4, null);
    return this.number();
  }

  private literal<T>(length: number, value: T): T {
    this.i += length;
    return value;
  }

  private object(): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    this.i++;
    if (this.skipSpace() === 125) {
      this.i++;
      return out;
    }
    for (;;) {
      this.skipSpace();
      const key = this.string();
      this.skipSpace();
      this.i++; // ':'
      const value = this.value();
      // As JSON.parse does: "__proto__" is an own property, never the prototype.
      if (key === '__proto__') Object.defineProperty(out, key, { value, enumerable: true, writable: true, configurable: true });
      else out[key] = value;
      if (this.skipSpace() === 44) {
        this.i++;
        continue;
      }
      this.i++; // '}'
      return out;
    }
  }

  private array(): unknown[] {
    const out: unknown[] = [];
    this.i++;
    if (this.skipSpace() === 93) {
      this.i++;
      return out;
    }
    for (;;) {
      out.push(this.value());
      if (this.skipSpace() === 44) {
        this.i++;
        continue;
      }
      this.i++; // ']'
      return out;
    }
  }

  private string(): string {
    const s = this.s;
    const open = this.i;
    const close = closingQuote(s, open);
    this.i = close + 1;
    const body = s.slice(open + 1, close);
    return body.includes('\\') ? (JSON.parse(s.slice(open, close + 1)) as string) : body;
  }

  private number(): number | LosslessNumber {
    const s = this.s;
    const start = this.i;
    let c = s.charCodeAt(this.i);
    // Digits, '-', '+', '.', 'e', 'E'.
    while ((c >= 48 && c <= 57) || c === 45 || c === 43 || c === 46 || c === 101 || c === 69) c = s.charCodeAt(++this.i);
    const text = s.slice(start, this.i);
    const n = Number(text);
    return carriesExactly(text, n) ? n : new LosslessNumber(text);
  }
}

/** Placeholders for number texts in `JSON.stringify` output; random, so no event's string can match. */
let marks: { mark: string; marked: RegExp } | undefined;

/**
 * The placeholders, made on first use: the rare event that needs them pays for loading the crypto
 * module, not every process that parses JSON (it is a few ms of each start).
 */
function placeholders(): { mark: string; marked: RegExp } {
  if (marks === undefined) {
    const mark = `\u0000${globalThis.crypto.randomUUID()}#`;
    marks = { mark, marked: new RegExp(`"\\\\u0000${mark.slice(1)}(\\d+)"`, 'g') };
  }
  return marks;
}

/**
 * Serialises an event, writing LosslessNumbers as their text and BigInts as their digits. Numbers read
 * from the input are never changed; a NaN or ±Infinity that user code computed (`e.qty * e.price` on an
 * event without a qty) is written as null, as JSON.stringify does: JSON has no such numbers.
 */
export function stringifyEvent(value: unknown): string {
  const json = stringifyJson(value);
  if (json === undefined) throw new Error('the value has no JSON form');
  return json;
}

/** Serialises any value (an event, a view column, a key) with LosslessNumbers and BigInts written exactly. */
export function stringifyJson(value: unknown): string | undefined {
  sawLossless = false;
  let json: string | undefined;
  try {
    json = JSON.stringify(value) as string | undefined;
  } catch (error) {
    if (!(error instanceof TypeError) || !error.message.includes('BigInt')) throw error;
    return stringifyLossless(value);
  }
  return sawLossless ? stringifyLossless(value) : json;
}

/** JSON.stringify with a replacer: number texts go in as placeholders, replaced afterwards. */
function stringifyLossless(value: unknown): string {
  const texts: string[] = [];
  const { mark, marked } = placeholders();
  const json = JSON.stringify(value, function (this: Record<string, unknown>, key: string, v: unknown): unknown {
    const raw = this[key];
    if (raw instanceof LosslessNumber || typeof raw === 'bigint') {
      texts.push(String(raw));
      return `${mark}${texts.length - 1}`;
    }
    return v;
  }) as string | undefined;
  if (json === undefined) throw new Error('the value has no JSON form');
  return texts.length === 0 ? json : json.replace(marked, (_m, i: string) => texts[Number(i)] as string);
}
