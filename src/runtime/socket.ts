/**
 * All Runtime API socket I/O. `talk` is the one function that touches `node:net`;
 * `exchange` (worker CLI, interactive, pipelined) and `masterCommand` (master CLI, one
 * command, half-close) only frame bytes for it and split what comes back.
 *
 * Every call opens a new connection and closes it when done. That is deliberate: after a
 * reload, a connection that stays open remains attached to the old, stopping worker
 * (`show info` says `Stopping: 1`, `set server` answers `Proxy is disabled.`), whereas a
 * new connection reaches the new worker. Batching (many commands per connection) keeps
 * the cost of that low.
 */
import net from 'node:net';
import { StringDecoder } from 'node:string_decoder';
import {
  InvalidArgumentError,
  PermissionDeniedError,
  ReplyParseError,
  RuntimeConnectionError,
  RuntimeTimeoutError,
  type UpdaterError,
} from '../errors.js';
import { logger } from '../log.js';
import { assertSafeCommand, type Command } from './command.js';

const log = logger('runtime');

/** A unix socket path, or a TCP `stats socket ipv4@host:port`. */
export type SocketTarget = { path: string } | { host: string; port: number };

export interface ExchangeOptions {
  /** Deadline for connecting and receiving every reply, in ms. Default 5000. */
  timeoutMs?: number;
  /** HAProxy's `tune.bufsize`: a payload command larger than it allows is refused unsent. Default 16384. */
  bufsize?: number;
}

export const DEFAULT_TIMEOUT_MS = 5000;

/** Connections opened since start (for tests and metrics: a batch must not cost one each). */
let connectionsOpened = 0;
export function connectionCount(): number {
  return connectionsOpened;
}

export function describeTarget(target: SocketTarget): string {
  return 'path' in target ? target.path : `${target.host}:${target.port}`;
}

interface TalkResult {
  /** Everything received before the connection closed (empty when `onData` took it). */
  readonly data: string;
  /** Why the conversation ended early, if it did. */
  readonly error?: UpdaterError;
  /** False when the connection was never established, i.e. not one byte was written. */
  readonly connected: boolean;
}

const CONNECTION_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ENOENT', 'EPIPE', 'ECONNABORTED', 'ENOTSOCK', 'EHOSTUNREACH', 'ENETUNREACH']);

/**
 * THE socket I/O function: connect, write `bytes`, optionally half-close, read until the
 * peer closes. Never rejects: failures come back as `error` next to the data received so
 * far, so callers can tell which replies did arrive. With `onData` every chunk goes there
 * as it arrives and nothing is kept: a multi-megabyte `show stat` is then never held as
 * chunks, their concatenation and its text at once.
 */
function talk(target: SocketTarget, bytes: string, opts: { timeoutMs: number; halfClose: boolean; onData?: (chunk: Buffer) => void }): Promise<TalkResult> {
  return new Promise((resolve) => {
    const where = describeTarget(target);
    const chunks: Buffer[] = [];
    const onData = opts.onData ?? ((c: Buffer) => chunks.push(c));
    let connected = false;
    let error: UpdaterError | undefined;
    const sock = 'path' in target ? net.createConnection({ path: target.path }) : net.createConnection({ host: target.host, port: target.port });
    const timer = setTimeout(() => {
      error ??= new RuntimeTimeoutError(`runtime socket ${where}: no ${connected ? 'complete reply' : 'connection'} within ${opts.timeoutMs} ms`, {
        target: where,
        phase: connected ? 'reply' : 'connect',
        timeoutMs: opts.timeoutMs,
      });
      sock.destroy();
    }, opts.timeoutMs);
    sock.on('connect', () => {
      connected = true;
      connectionsOpened++;
      if (opts.halfClose) sock.end(bytes);
      else sock.write(bytes);
    });
    sock.on('data', onData);
    sock.on('error', (err: NodeJS.ErrnoException) => {
      const context = { target: where, errno: err.code, phase: connected ? 'reply' : 'connect' };
      if (err.code === 'EACCES' || err.code === 'EPERM') {
        error ??= new PermissionDeniedError(`runtime socket ${where}: ${err.message}`, context, { cause: err });
      } else {
        // Refused/reset/missing: HAProxy is (re)starting. Anything unexpected is treated the
        // same way, as a transport failure worth retrying later.
        if (!CONNECTION_CODES.has(err.code ?? '')) log.warn({ err, target: where }, 'unexpected socket error');
        error ??= new RuntimeConnectionError(`runtime socket ${where}: ${err.code ?? err.message}`, context, { cause: err });
      }
    });
    sock.on('close', () => {
      clearTimeout(timer);
      resolve({ data: chunks.length ? Buffer.concat(chunks).toString('utf8') : '', connected, ...(error ? { error } : {}) });
    });
  });
}

/** One outcome per command of an exchange: a reply, or why none can be attributed. */
export interface SettledExchange {
  /** Replies of the first `replies.length` commands, in order; complete and framed. */
  readonly replies: string[];
  /** Set when fewer replies than commands came back; applies to the remaining commands. */
  readonly error?: UpdaterError;
  /** False when no connection was made, so none of the commands can have run. */
  readonly connected: boolean;
}

/** The interactive-mode prompt; every reply, including the one to `prompt`, is followed by it. */
const PROMPT = '\n> ';

/**
 * Sends `commands` on one connection in interactive mode and returns what happened to each.
 * `prompt` goes first, then every command, then `quit`, all in one write (pipelined).
 * Replies are split on the prompt: in non-interactive mode some error replies lack the
 * terminating blank line and would run into the next reply, but every reply is followed
 * by a prompt. A reply is returned as HAProxy printed it, without the prompt; for payload
 * commands the `+ ` continuation prompts are stripped. Validates every command first, so
 * an unsafe one means nothing at all is written.
 */
export async function exchangeSettled(target: SocketTarget, commands: readonly Command[], opts: ExchangeOptions = {}): Promise<SettledExchange> {
  for (const c of commands) assertSafeCommand(c, opts);
  if (commands.length === 0) return { replies: [], connected: false };
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  let bytes = 'prompt\n';
  for (const c of commands) {
    bytes += c.text + '\n';
    if (c.payload) bytes += c.payload.map((l) => l + '\n').join('') + '\n';
  }
  bytes += 'quit\n';
  const started = performance.now();
  const framer = new PromptFramer();
  const res = await talk(target, bytes, { timeoutMs, halfClose: false, onData: (c) => framer.push(c) });
  const where = describeTarget(target);
  const { head, framed, rest } = framer.end();

  // `head` precedes the prompt acknowledging `prompt` and must be empty; `rest` is whatever
  // followed the final prompt (empty after a clean `quit`).
  if (head !== '') {
    const error = new ReplyParseError(`runtime socket ${where}: reply does not start with a prompt (not a worker CLI?)`, {
      target: where,
      received: head.slice(0, 200),
    });
    return { replies: [], error, connected: res.connected };
  }
  if (framed.length > commands.length || (framed.length === commands.length && rest !== '')) {
    // A reply contained the prompt text itself; attribution is impossible.
    const error = new ReplyParseError(`runtime socket ${where}: ${framed.length} prompts for ${commands.length} commands`, {
      target: where,
      commands: commands.length,
    });
    return { replies: [], error, connected: res.connected };
  }
  const replies = framed.map((r, i) => stripPayloadPrompts(r, commands[i]?.payload?.length));
  const ms = Math.round(performance.now() - started);
  if (replies.length === commands.length) {
    // All replies are in; a reset while closing after `quit` changes nothing.
    log.debug({ target: where, commands: commands.length, ms }, 'runtime exchange');
    return { replies, connected: true };
  }
  const error =
    res.error ??
    new RuntimeConnectionError(`runtime socket ${where}: connection closed after ${replies.length} of ${commands.length} replies`, {
      target: where,
      replies: replies.length,
      commands: commands.length,
    });
  log.warn({ target: where, code: error.code, replies: replies.length, commands: commands.length, ms }, 'runtime exchange incomplete');
  return { replies, error, connected: res.connected };
}

/**
 * Splits the byte stream of an interactive session on the prompt as it arrives, so that
 * each reply exists once, as one string, and the session as a whole is never one string.
 * Same result as `text.split(PROMPT)`: `head` is the first part, `framed` the middle ones,
 * `rest` the last. A prompt or a UTF-8 sequence cut by a chunk boundary is carried over.
 */
export class PromptFramer {
  readonly #decoder = new StringDecoder('utf8');
  /** Text of the part being received, in pieces: joined once, when its prompt arrives. */
  #pieces: string[] = [];
  /** The end of the last chunk that may be the start of a prompt. */
  #carry = '';
  #head: string | null = null;
  readonly #framed: string[] = [];

  push(chunk: Buffer): void {
    this.#scan(this.#decoder.write(chunk));
  }

  end(): { head: string; framed: string[]; rest: string } {
    this.#scan(this.#decoder.end());
    const rest = this.#pieces.join('') + this.#carry;
    this.#pieces = [];
    this.#carry = '';
    if (this.#head === null) return { head: rest, framed: [], rest: '' };
    return { head: this.#head, framed: this.#framed, rest };
  }

  #scan(text: string): void {
    if (text === '') return;
    const s = this.#carry + text;
    let from = 0;
    for (let i = s.indexOf(PROMPT); i >= 0; i = s.indexOf(PROMPT, from)) {
      if (i > from) this.#pieces.push(s.slice(from, i));
      const part = this.#pieces.length === 1 ? this.#pieces[0]! : this.#pieces.join('');
      this.#pieces = [];
      if (this.#head === null) this.#head = part;
      else this.#framed.push(part);
      from = i + PROMPT.length;
    }
    // Keep back what could be the first characters of a prompt completed by the next chunk.
    let keep = Math.min(PROMPT.length - 1, s.length - from);
    while (keep > 0 && !PROMPT.startsWith(s.slice(s.length - keep))) keep--;
    if (s.length - keep > from) this.#pieces.push(s.slice(from, s.length - keep));
    this.#carry = s.slice(s.length - keep);
  }
}

/** In interactive mode HAProxy prints `+ ` for the payload command and each payload line. */
function stripPayloadPrompts(reply: string, payloadLines: number | undefined): string {
  if (payloadLines === undefined) return reply;
  let r = reply;
  for (let i = 0; i <= payloadLines && r.startsWith('+ '); i++) r = r.slice(2);
  return r;
}

/** `exchangeSettled`, but any transport problem throws; one raw reply per command. */
export async function exchange(target: SocketTarget, commands: readonly Command[], opts: ExchangeOptions = {}): Promise<string[]> {
  const res = await exchangeSettled(target, commands, opts);
  if (res.error) throw res.error;
  return res.replies;
}

/**
 * One command to the master CLI (`-S master.sock`). The master answers a non-interactive
 * connection only after the client half-closes, then closes itself; `reload` answers
 * nothing at all. Returns everything received. Throws transport errors.
 */
export async function masterCommand(target: SocketTarget, command: Command, opts: ExchangeOptions = {}): Promise<string> {
  assertSafeCommand(command);
  if (command.payload) throw new InvalidArgumentError('payload commands are not supported on the master CLI', { argument: 'command', value: command.text });
  const res = await talk(target, command.text + '\n', { timeoutMs: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS, halfClose: true });
  if (res.error) throw res.error;
  return res.data;
}
