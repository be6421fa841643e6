/**
 * Runtime API commands as values, and the validators every argument goes through.
 *
 * A `Command` can only be made by `makeCommand` (the type is branded), and `makeCommand`
 * refuses any text that could change how HAProxy splits its input: the CLI runs a second
 * command after `;` or a newline, treats `\` as an escape, and switches to payload mode
 * for any line that ends in `<<` — which would swallow the commands pipelined after it
 * (verified on 2.6.12: `set map f k v<<` ate the next two commands). The per-argument
 * validators below are stricter still; `socket.ts` checks again before writing a byte.
 */
import { InvalidArgumentError, PayloadTooLargeError } from '../errors.js';
import { assertInt, assertPort, assertIp } from '../assert.js';

declare const commandBrand: unique symbol;

/** One Runtime API command line, plus payload lines for `... <<` commands. */
export type Command = {
  readonly text: string;
  /** Lines sent after a text ending in ` <<`; each non-empty, ended by an empty line. */
  readonly payload?: readonly string[];
  readonly [commandBrand]: true;
};

/** Anything that may not appear anywhere in a command line or payload line. */
// eslint-disable-next-line no-control-regex
const FORBIDDEN = /[\u0000-\u001f\u007f;\\#]/;
/** HAProxy 2.6 reads at most one buffer (16 kB) per line; stay far below it. */
const MAX_LINE = 4096;
/** A map payload is held in one buffer too; above ~16 kB the CLI closes the connection. */
export const MAX_PAYLOAD_BYTES = 8192;

/** HAProxy's default `tune.bufsize`. */
export const DEFAULT_BUFSIZE = 16384;
/**
 * Room left unused in the CLI buffer. Measured on 2.6.12 (default bufsize): a command line
 * plus payload of up to bufsize-2 bytes is answered; bufsize-1 gets no reply at all and the
 * worker then dies (watchdog: "bogus APPCTX ... spinning"); bufsize and more have the
 * connection closed without a reply. A margin keeps well away from that edge.
 */
export const PAYLOAD_MARGIN = 1024;

/** Largest command line + payload (bytes, newlines included) sent with this `tune.bufsize`. */
export function payloadLimit(bufsize: number = DEFAULT_BUFSIZE): number {
  return assertInt(bufsize, 4096, 1 << 24, 'bufsize') - PAYLOAD_MARGIN;
}

/**
 * The only commands that may carry a payload, each with the rule for its lines. Any other
 * text ending in `<<` is refused: a payload switches the CLI into a mode that swallows
 * whatever follows until an empty line.
 */
const PAYLOAD_COMMANDS: ReadonlyArray<{ text: RegExp; kind: 'map' | 'pem' | 'crt-list' }> = [
  { text: /^add map @\d+ \S+ <<$/, kind: 'map' },
  { text: /^set ssl cert \S+ <<$/, kind: 'pem' },
  { text: /^add ssl crt-list \S+ <<$/, kind: 'crt-list' },
];

/** A PEM line as `set ssl cert` gets it: armour, or base64 (no headers: encrypted keys are refused earlier). */
const PEM_LINE = /^(?:-----(?:BEGIN|END) [A-Z0-9 ]{1,40}-----|[A-Za-z0-9+/]{1,76}={0,2})$/;

export interface SafetyOptions {
  /** `tune.bufsize` of the HAProxy the command goes to; bounds PEM payloads. Default 16384. */
  bufsize?: number;
}

/**
 * The one place a `Command` is made. Throws `InvalidArgumentError` for `;`, `#`, `\`,
 * control characters (newline, CR, NUL, ...), non-ASCII, a stray `<<`, or over-long lines,
 * and `PayloadTooLargeError` for a payload the CLI buffer cannot take.
 */
export function makeCommand(text: string, payload?: readonly string[], opts: SafetyOptions = {}): Command {
  assertSafeCommand({ text, payload }, opts);
  const cmd = payload === undefined ? { text } : { text, payload: Object.freeze([...payload]) };
  return Object.freeze(cmd) as Command;
}

/** Bytes a command occupies in HAProxy's CLI buffer: its line and every payload line, with newlines. */
export function commandBytes(cmd: { readonly text: string; readonly payload?: readonly string[] | undefined }): number {
  return cmd.text.length + 1 + (cmd.payload ?? []).reduce((n, l) => n + l.length + 1, 0);
}

/**
 * Central injection check, run by `makeCommand` and again by `socket.ts` right before a
 * connection is opened (defence in depth against a forged `Command`).
 */
export function assertSafeCommand(cmd: { readonly text: unknown; readonly payload?: readonly unknown[] | undefined }, opts: SafetyOptions = {}): void {
  const { text, payload } = cmd;
  if (typeof text !== 'string' || text.length === 0 || text.trim() !== text) {
    throw new InvalidArgumentError('command text must be a non-empty trimmed string', { argument: 'command', value: text });
  }
  assertSafeLine('command', text);
  const wantsPayload = text.endsWith(' <<');
  if (!wantsPayload && text.includes('<<')) {
    throw new InvalidArgumentError('command text may not contain "<<" (payload marker)', { argument: 'command', value: text });
  }
  if (wantsPayload !== (payload !== undefined)) {
    throw new InvalidArgumentError('a payload goes with, and only with, a command ending in " <<"', { argument: 'command', value: text });
  }
  if (payload === undefined) return;
  if (text.indexOf('<<') !== text.length - 2) {
    throw new InvalidArgumentError('"<<" may only end a payload command', { argument: 'command', value: text });
  }
  const kind = PAYLOAD_COMMANDS.find((p) => p.text.test(text))?.kind;
  if (kind === undefined) {
    throw new InvalidArgumentError('this command does not take a payload', { argument: 'command', value: text });
  }
  if (payload.length === 0 || (kind === 'crt-list' && payload.length !== 1)) {
    throw new InvalidArgumentError(kind === 'crt-list' ? 'a crt-list payload is exactly one line' : 'a payload needs at least one line', {
      argument: 'payload',
      value: `${payload.length} lines`,
      command: text,
    });
  }
  let bytes = 0;
  for (const line of payload) {
    // An empty line ends the payload early; the rest would run as commands.
    if (typeof line !== 'string' || line.length === 0) {
      throw new InvalidArgumentError('payload lines must be non-empty strings', { argument: 'payload', value: line, command: text });
    }
    assertSafeLine('payload', line, text);
    if (kind === 'pem' && !PEM_LINE.test(line)) {
      throw new InvalidArgumentError('a certificate payload holds PEM armour and base64 lines only', { argument: 'payload', value: line, command: text });
    }
    bytes += line.length + 1;
  }
  if (kind === 'pem') {
    const total = bytes + text.length + 1;
    const limit = payloadLimit(opts.bufsize);
    if (total > limit) {
      throw new PayloadTooLargeError(
        `payload of ${total} bytes is over ${limit}, what the CLI takes with tune.bufsize ${opts.bufsize ?? DEFAULT_BUFSIZE} (command: ${text})`,
        { command: text, bytes: total, limit, bufsize: opts.bufsize ?? DEFAULT_BUFSIZE },
      );
    }
  } else if (bytes > MAX_PAYLOAD_BYTES) {
    throw new InvalidArgumentError(`payload over ${MAX_PAYLOAD_BYTES} bytes (HAProxy drops the connection)`, {
      argument: 'payload',
      value: `${bytes} bytes`,
      command: text,
    });
  }
}

function assertSafeLine(argument: string, line: string, command?: string): void {
  if (line.length > MAX_LINE || FORBIDDEN.test(line) || !/^[\x20-\x7e]*$/.test(line)) {
    throw new InvalidArgumentError(`unsafe ${argument}: only printable ASCII without ; # \\ or control characters`, {
      argument,
      value: line,
      ...(command === undefined ? {} : { command }),
    });
  }
}

// ---------------------------------------------------------------- argument validators

function invalid(argument: string, value: unknown, rule: string): never {
  throw new InvalidArgumentError(`invalid ${argument} ${JSON.stringify(value)}: ${rule}`, { argument, value });
}

/** HAProxy proxy/server identifiers: letters, digits, `.`, `_`, `:`, `-` (no `/`, no space). */
const NAME_RE = /^[A-Za-z0-9._:-]{1,127}$/;

/** Backend (proxy) name. `argument` names the parameter in the error context. */
export function assertBackendName(value: unknown, argument = 'backend'): string {
  if (typeof value !== 'string' || !NAME_RE.test(value)) invalid(argument, value, 'expected [A-Za-z0-9._:-]{1,127}');
  return value;
}

export function assertServerName(value: unknown, argument = 'server'): string {
  if (typeof value !== 'string' || !NAME_RE.test(value)) invalid(argument, value, 'expected [A-Za-z0-9._:-]{1,127}');
  return value;
}

// Integers, ports and IP literals follow the one rule of src/assert.ts (shared with src/render).
export { assertInt, assertPort, assertIp };

/** HAProxy absolute weight 0–256. */
export function assertWeight(value: unknown, argument = 'weight'): number {
  return assertInt(value, 0, 256, argument);
}

/** Absolute path of safe characters only, no `..` segment (a file we generated ourselves). */
export function assertMapPath(value: unknown, argument = 'path'): string {
  if (
    typeof value !== 'string' ||
    value.length > 1024 ||
    !/^\/[A-Za-z0-9._/+-]*[A-Za-z0-9._+-]$/.test(value) ||
    value.split('/').some((seg) => seg === '..' || seg === '.') ||
    value.includes('//')
  ) {
    invalid(argument, value, 'expected an absolute path of [A-Za-z0-9._/+-] without . or .. segments');
  }
  return value;
}

/**
 * Map key or value: printable ASCII without whitespace, `;`, `#`, `\`, `<<`, quotes.
 * HAProxy splits on spaces (a value `b c` is silently stored as `b`), and quotes are
 * stored literally (`"b1` from `"b1 b2"`), so neither is ever meaningful here.
 */
export function assertMapToken(value: unknown, argument: string): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > 1024 || !/^[\x21-\x7e]+$/.test(value) || /[;#\\"']|<</.test(value)) {
    invalid(argument, value, 'expected printable ASCII without whitespace ; # \\ quotes or <<');
  }
  return value;
}

/** One of a closed set of words. */
export function assertOneOf<T extends string>(value: unknown, allowed: readonly T[], argument: string): T {
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
    invalid(argument, value, `expected one of ${allowed.join(', ')}`);
  }
  return value as T;
}

/** `<backend>/<server>` after validating both halves. */
export function serverRef(backend: unknown, server: unknown): string {
  return `${assertBackendName(backend)}/${assertServerName(server)}`;
}

/**
 * A command the families do not cover (e.g. `get weight b/s`), from words that each must be
 * a single safe token. Prefer the typed builders.
 */
export function customCommand(words: readonly string[]): Command {
  if (words.length === 0) invalid('words', words, 'expected at least one word');
  words.forEach((w, i) => assertMapToken(w, `words[${i}]`));
  return makeCommand(words.join(' '));
}
