/**
 * The worker Runtime API client: typed errors per command, many commands per connection.
 * Modelled on client-native's `runtime_single_client.go`, with HAProxy's interactive mode
 * so that replies are framed reliably (see socket.ts).
 */
import { classifyReply, type UpdaterError } from '../errors.js';
import { assertSafeCommand, DEFAULT_BUFSIZE, type Command } from './command.js';
import { DEFAULT_TIMEOUT_MS, exchangeSettled, type SettledExchange, type SocketTarget } from './socket.js';

export type BatchResult =
  | { command: string; ok: true; reply: string }
  | { command: string; ok: false; error: UpdaterError };

export interface RuntimeClientOptions {
  /** Per-connection deadline (connect + all replies of one chunk), ms. Default 5000. */
  timeoutMs?: number;
  /** Commands per connection in `batch`. Default 200. */
  batchSize?: number;
  /**
   * HAProxy's `tune.bufsize` (the template's setting): bounds `set ssl cert` payloads, which
   * are refused unsent above it (a too-large payload can crash a 2.6 worker). Default 16384.
   */
  bufsize?: number;
}

/** Pause before the single retry of a chunk whose connection was refused (reload re-exec ~0.1 s). */
const RETRY_DELAY_MS = 150;

export class RuntimeClient {
  readonly #target: SocketTarget;
  readonly #timeoutMs: number;
  readonly #batchSize: number;
  readonly #bufsize: number;

  constructor(target: SocketTarget, opts: RuntimeClientOptions = {}) {
    this.#target = target;
    this.#bufsize = opts.bufsize ?? DEFAULT_BUFSIZE;
    this.#timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.#batchSize = Math.max(1, Math.floor(opts.batchSize ?? 200));
  }

  get target(): SocketTarget {
    return this.#target;
  }

  /** The `tune.bufsize` payloads are checked against. */
  get bufsize(): number {
    return this.#bufsize;
  }

  /** Runs one command; returns its reply or throws the class `classifyReply` picks. */
  async run(cmd: Command): Promise<string> {
    const [result] = await this.batch([cmd]);
    if (!result) throw new Error('unreachable: batch returned no result');
    if (!result.ok) throw result.error;
    return result.reply;
  }

  /**
   * Runs `cmds` in order, `batchSize` per connection, one result per command.
   *
   * Semantics are those of a CLI script: a command HAProxy refuses does not stop the ones
   * after it (HAProxy itself keeps going within a connection). A transport failure does:
   * commands without a framed reply are reported failed with that error (their effect is
   * unknown), and later chunks are not sent, since ordered steps (drain → maint → addr)
   * must not run with a gap. A chunk is retried once, on a new connection, only when its
   * connection was never established — then not one byte of it reached HAProxy.
   * Throws `InvalidArgumentError` (or `PayloadTooLargeError`) before any I/O if a command is unsafe.
   */
  async batch(cmds: readonly Command[]): Promise<BatchResult[]> {
    for (const c of cmds) assertSafeCommand(c, { bufsize: this.#bufsize });
    const results: BatchResult[] = [];
    let transportError: UpdaterError | undefined;
    for (let start = 0; start < cmds.length; start += this.#batchSize) {
      const chunk = cmds.slice(start, start + this.#batchSize);
      if (transportError) {
        for (const c of chunk) results.push({ command: c.text, ok: false, error: notSent(transportError, c) });
        continue;
      }
      let res: SettledExchange = await exchangeSettled(this.#target, chunk, { timeoutMs: this.#timeoutMs, bufsize: this.#bufsize });
      if (res.error && !res.connected && res.error.recoverable) {
        await new Promise((r) => setTimeout(r, RETRY_DELAY_MS));
        res = await exchangeSettled(this.#target, chunk, { timeoutMs: this.#timeoutMs, bufsize: this.#bufsize });
      }
      chunk.forEach((c, i) => {
        const reply = res.replies[i];
        if (reply !== undefined) {
          const error = classifyReply(reply, c.text);
          results.push(error ? { command: c.text, ok: false, error } : { command: c.text, ok: true, reply });
        } else {
          results.push({ command: c.text, ok: false, error: perCommand(res.error, c, res.connected) });
        }
      });
      if (res.error) transportError = res.error;
    }
    return results;
  }
}

type ErrorCtor = new (message: string, context?: Record<string, unknown>, options?: { cause?: unknown }) => UpdaterError;

/** The chunk's transport error, restated for one command, with whether it may have run. */
function perCommand(err: UpdaterError | undefined, c: Command, connected: boolean): UpdaterError {
  if (!err) throw new Error('unreachable: missing reply without an error');
  const Ctor = err.constructor as ErrorCtor;
  return new Ctor(`${err.message} (command: ${c.text})`, { ...err.context, command: c.text, outcome: connected ? 'unknown' : 'not-sent' }, { cause: err });
}

function notSent(err: UpdaterError, c: Command): UpdaterError {
  const Ctor = err.constructor as ErrorCtor;
  return new Ctor(`not sent after an earlier transport failure: ${err.message} (command: ${c.text})`, { ...err.context, command: c.text, outcome: 'not-sent' }, { cause: err });
}
