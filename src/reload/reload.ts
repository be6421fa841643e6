/**
 * The guarded reload (design.md, "Reload procedure"):
 *  1. dump `show servers state` to the server-state file (runtime slot addresses survive);
 *  2. probe the TCP ports the new config adds and write support files + candidate config,
 *     `haproxy -c`; refused → with a QuarantineSource, the services responsible are found
 *     and left out (quarantine.ts), else nothing changed;
 *  3. rename into place, previous config kept as `<cfg>.prev`;
 *  4. guard on (iptables SYN drop, or none);
 *  5. master `reload`, verdict from `show proc` (reload counter up, `failed: 0`, new worker);
 *  6. guard off in every outcome;
 *  7. on failure: previous config and support files back, reload again, report.
 * Success returns a ReloadResult; every failure throws a typed error (the caller must not
 * believe the new config is running). Between 3. and 5. the file on disk is ahead of what
 * runs: the caller records a config as running only after a returned result (the daemon's
 * applied.json), so a crash in between is seen at the next start.
 */
import { performance } from 'node:perf_hooks';
import { ConfigInvalidError, GuardError, ReloadFailedError, ReloadTimeoutError, ReplyParseError, UpdaterError } from '../errors.js';
import { logger } from '../log.js';
import { showServersState } from '../runtime/servers.js';
import type { Command } from '../runtime/command.js';
import { readFile } from 'node:fs/promises';
import { atomicWrite, writeRendered, type WriteResult } from './files.js';
import { assertNewPortsFree } from './ports.js';
import { excludeRefused, excludeUnbindable, type QuarantineSource } from './quarantine.js';
import type { Culprit } from '../reconcile/quarantine.js';
import path from 'node:path';
import type { ReloadGuard } from './guard.js';
import { configIdentity, type Rendered } from '../render/index.js';

const log = logger('reload');

/** What the reloader needs of the master CLI; `MasterClient` from src/runtime fits. */
export interface MasterLike {
  /** Sends `reload` and resolves once it is confirmed; throws ReloadFailedError/ReloadTimeoutError otherwise. */
  reload(opts?: { timeoutMs?: number }): Promise<unknown>;
  showProc(): Promise<{ reloads: number; failed: number; workers: ReadonlyArray<{ pid: number }> }>;
}

/** Source of the `show servers state` dump: a RuntimeClient, or a function returning the text. */
export type StateSource = { run(cmd: Command): Promise<string> } | (() => Promise<string>);

export interface ReloaderOptions {
  master: MasterLike;
  runtime: StateSource;
  guard: ReloadGuard;
  /** The config HAProxy runs (`-f`). */
  cfgPath: string;
  /** Must equal the config's `server-state-file`. */
  serverStateFile: string;
  /** Frontend ports to guard, read at each reload (they change with tcp services). */
  guardPorts: () => number[];
  /** Deadline for one master reload to be confirmed. Default 15000 ms. */
  reloadTimeoutMs?: number;
  /** HAProxy executable for `haproxy -c`. Default `haproxy`. */
  haproxyBin?: string;
  /** Deadline for `haproxy -c`. Default 30000 ms. */
  validateTimeoutMs?: number;
  /**
   * Before anything changes, try to bind the TCP ports the new config adds: one taken by
   * another process would fail the reload *after* HAProxy paused its listeners (see
   * ports.ts). Probes run in the updater's network namespace; turn this off when HAProxy
   * runs in another one. Default true.
   */
  probeNewPorts?: boolean;
  /**
   * Run `haproxy -c` before reloading (asked at each reload). False only where the running
   * HAProxy validates the config itself in a synchronous reload (see `localCheckFirst`):
   * its refusal then comes back as ConfigInvalidError after the rollback. Default: always.
   */
  validateLocally?: () => boolean;
  /**
   * Test only (crash-safety tests): `after-rename` SIGKILLs this process right after the new
   * config is renamed into place, before the master reload. Default null: never.
   */
  testCrashAt?: 'after-rename' | null;
}

/** `R`: the caller's reason type (the daemon's typed ReloadCause); the reloader only carries it. */
export interface ReloadResult<R = unknown> {
  ok: true;
  durationMs: number;
  reasons: readonly R[];
  /** Always false on a returned result: a rolled-back reload throws. */
  rolledBack: false;
  /** `[WARNING]` lines of `haproxy -c`. */
  warnings: string[];
  /** ms spent writing + `haproxy -c` (check) and in the guarded master reload (reload). */
  phases: { checkMs: number; reloadMs: number };
  /** The config that now runs: the one asked for, or it without `quarantined`. */
  rendered: Rendered;
  /** Services left out because HAProxy refused them (empty without a QuarantineSource). */
  quarantined: readonly Culprit[];
  /** `haproxy -c` runs spent finding them. */
  quarantineChecks: number;
  /** False when, without the quarantined services, the config is the one already running (no reload was needed). */
  reloaded: boolean;
}

export class Reloader<R = unknown> {
  readonly #o: ReloaderOptions;
  /** Reloads never overlap, even if a caller forgets to serialize. */
  #tail: Promise<unknown> = Promise.resolve();

  constructor(opts: ReloaderOptions) {
    this.#o = opts;
  }

  /** Writes and validates a config without reloading (first start, before HAProxy runs). */
  write(rendered: Rendered): Promise<WriteResult> {
    return this.#serial(() => writeRendered(rendered, this.#o.cfgPath, this.#validateOpts()));
  }

  /** With `quarantine`, a refused render is retried without the services responsible. */
  reload(rendered: Rendered, reasons: readonly R[], quarantine?: QuarantineSource): Promise<ReloadResult<R>> {
    return this.#serial(() => this.#reload(rendered, reasons, quarantine));
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#tail.then(fn, fn);
    this.#tail = run.catch(() => undefined);
    return run;
  }

  #validateOpts() {
    return { haproxyBin: this.#o.haproxyBin, timeoutMs: this.#o.validateTimeoutMs };
  }

  async #reload(asked: Rendered, reasons: readonly R[], q?: QuarantineSource): Promise<ReloadResult<R>> {
    const started = performance.now();
    const ctx = { reasons };
    const local = this.#o.validateLocally?.() ?? true;
    const exclude = new Set<string>();
    const quarantined: Culprit[] = [];
    let rendered = asked;
    let quarantineChecks = 0;

    // 0. A listener HAProxy cannot bind is refused now, not discovered during the reload:
    //    the tcp service asking for it is left out, or (no quarantine) the render refused.
    const current = await readFile(this.#o.cfgPath, 'utf8').catch(() => '');
    // Left out, the rest may be what already runs: then there is nothing to reload.
    const unchanged = (): ReloadResult<R> | null =>
      quarantined.length && configIdentity(rendered.config) === configIdentity(current)
        ? { ok: true, durationMs: Math.round(performance.now() - started), reasons, rolledBack: false, warnings: [], phases: { checkMs: 0, reloadMs: 0 }, rendered, quarantined, quarantineChecks, reloaded: false }
        : null;
    if (this.#o.probeNewPorts !== false) {
      if (q) {
        quarantined.push(...(await excludeUnbindable(current, rendered, q, exclude)));
        if (exclude.size) rendered = q.render(exclude);
      } else await assertNewPortsFree(current, rendered.config);
    }

    const early = unchanged();
    if (early) return early;

    // 1. Without a fresh state dump a reload would reset every slot to the config's
    //    `slot.invalid`/maint: refuse rather than cut traffic.
    const dump = await dumpServerState(this.#o.runtime);
    await atomicWrite(this.#o.serverStateFile, dump);

    // 2.–3. ConfigInvalidError propagates: config file and HAProxy untouched. Refused with
    //    a QuarantineSource: find the services responsible, write the config without them.
    const checkStarted = performance.now();
    let written: WriteResult;
    try {
      written = await writeRendered(rendered, this.#o.cfgPath, { ...this.#validateOpts(), skipValidation: !local });
    } catch (err) {
      if (!(q && local && err instanceof ConfigInvalidError)) throw err;
      const found = await excludeRefused(err, q, exclude, { ...this.#validateOpts(), workDir: path.dirname(this.#o.cfgPath) });
      quarantined.push(...found.culprits);
      quarantineChecks = found.checks;
      rendered = q.render(exclude);
      const same = unchanged();
      if (same) return same;
      written = await writeRendered(rendered, this.#o.cfgPath, { ...this.#validateOpts(), skipValidation: !local });
    }
    if (this.#o.testCrashAt === 'after-rename') process.kill(process.pid, 'SIGKILL');
    if (quarantined.length) log.warn({ quarantined: quarantined.map((c) => c.backend), checks: quarantineChecks }, 'refused services left out of the config');

    // 4.–6.
    const reloadStarted = performance.now();
    const first = await this.#guardedReload();
    const phases = { checkMs: Math.round(reloadStarted - checkStarted), reloadMs: Math.round(performance.now() - reloadStarted) };
    if (first.error === null) {
      // Reloaded; a guard left engaged still drops every new connection: report it loudly.
      if (first.releaseError) throw withContext(first.releaseError, { ...ctx, reloaded: true });
      const durationMs = Math.round(performance.now() - started);
      log.info({ ...ctx, durationMs }, 'reload done');
      return { ok: true, durationMs, reasons, rolledBack: false, warnings: written.warnings, phases, rendered, quarantined, quarantineChecks, reloaded: true };
    }
    if (first.stage === 'engage') {
      // Nothing was reloaded: only the files need to go back.
      await written.rollback();
      throw first.releaseError ?? first.error;
    }

    // 7. Put the previous files back and reload onto them, so the config on disk is the one
    //    running and the master leaves its failed state.
    const failure = first.error;
    log.error({ err: failure, ...ctx }, 'reload failed; rolling back to the previous config');
    if (!written.hadPrevious) {
      throw wrap(failure, 'reload failed and there is no previous config to roll back to', { ...ctx, rolledBack: false });
    }
    let second: GuardedOutcome;
    try {
      await written.rollback();
      second = await this.#guardedReload();
    } catch (err) {
      second = { error: err, stage: 'reload', releaseError: null };
    }
    const releaseError = first.releaseError ?? second.releaseError;
    if (releaseError) throw withContext(releaseError, { ...ctx, reloadError: describe(failure) });
    if (second.error !== null) {
      log.error({ err: second.error, ...ctx }, 'rollback reload failed too');
      throw new ReloadFailedError(
        `reload failed (${describe(failure)}) and the rollback reload failed too (${describe(second.error)})`,
        { ...ctx, rolledBack: false, rollbackError: describe(second.error) },
        { cause: failure },
      );
    }
    const durationMs = Math.round(performance.now() - started);
    if (!local && failure instanceof ReloadFailedError && Array.isArray(failure.context.alerts)) {
      // The running HAProxy was the validator: same outcome as a `haproxy -c` refusal.
      throw new ConfigInvalidError(`the running HAProxy refused the config (${describe(failure)}); previous config restored and reloaded`, {
        ...ctx,
        rolledBack: true,
        durationMs,
        validatedBy: 'running haproxy',
        alerts: failure.context.alerts,
      }, { cause: failure });
    }
    throw new ReloadFailedError(
      `reload failed (${describe(failure)}); previous config restored and reloaded`,
      { ...ctx, rolledBack: true, durationMs, code: failure instanceof UpdaterError ? failure.code : undefined },
      { cause: failure },
    );
  }

  /** Guard on, reload, guard off — off in every outcome. Never throws: returns what went wrong where. */
  async #guardedReload(): Promise<GuardedOutcome> {
    const guard = this.#o.guard;
    let error: unknown = null;
    let stage: GuardedOutcome['stage'] = 'engage';
    try {
      await guard.engage(this.#o.guardPorts());
      stage = 'reload';
      await this.#o.master.reload({ timeoutMs: this.#o.reloadTimeoutMs ?? 15_000 });
      // Belt and braces for MasterLike implementations that only send `reload`.
      const proc = await this.#o.master.showProc();
      if (proc.failed > 0) throw new ReloadFailedError(`master reports failed: ${proc.failed}`, { failed: proc.failed, reloads: proc.reloads });
    } catch (err) {
      error = err;
    }
    let releaseError: GuardError | null = null;
    try {
      await guard.release();
    } catch (err) {
      log.error({ err }, 'reload guard could not be released');
      releaseError = err instanceof GuardError ? err : new GuardError(`reload guard not released: ${describe(err)}`, {}, { cause: err });
    }
    return { error, stage: error === null ? null : stage, releaseError };
  }
}

/** `show servers state` as the server-state file holds it (checked: format version line first). */
export async function dumpServerState(src: StateSource): Promise<string> {
  const text = typeof src === 'function' ? await src() : await src.run(showServersState());
  // Format version line `1`, then the `# be_id ...` header (notes §7).
  const trimmed = text.replace(/^\s+/, '');
  if (!/^1\n/.test(trimmed)) {
    throw new ReplyParseError('show servers state: unexpected reply (no version line)', { reply: text.slice(0, 200) });
  }
  return trimmed.endsWith('\n') ? trimmed : `${trimmed}\n`;
}

interface GuardedOutcome {
  error: unknown;
  /** Where `error` happened; null when there is none. */
  stage: 'engage' | 'reload' | null;
  releaseError: GuardError | null;
}

function withContext(err: GuardError, context: Record<string, unknown>): GuardError {
  return new GuardError(err.message, { ...err.context, ...context }, { cause: err });
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function wrap(err: unknown, message: string, context: Record<string, unknown>): UpdaterError {
  if (err instanceof ReloadTimeoutError) return new ReloadTimeoutError(`${message}: ${err.message}`, { ...err.context, ...context }, { cause: err });
  if (err instanceof GuardError) return err;
  if (err instanceof ConfigInvalidError) return err;
  return new ReloadFailedError(`${message}: ${describe(err)}`, context, { cause: err });
}

export interface ReloadLimiterOptions {
  /** Minimum time between the starts of two reloads. Default 1000 ms. */
  minIntervalMs?: number;
  /** Clock, for tests. Default Date.now. */
  now?: () => number;
}

/**
 * Rate limit for reloads: each reload spawns a worker and leaves the old one finishing its
 * connections, so a flapping registry must not reload in a loop. Runtime operations are
 * never delayed by this; the caller coalesces pending reload reasons until `nextAllowedAt()`.
 */
export class ReloadLimiter {
  readonly #minIntervalMs: number;
  readonly #now: () => number;
  #last = Number.NEGATIVE_INFINITY;

  constructor(opts: ReloadLimiterOptions = {}) {
    this.#minIntervalMs = Math.max(0, opts.minIntervalMs ?? 1000);
    this.#now = opts.now ?? Date.now;
  }

  /** Records a reload (attempted or done) at `at`. */
  record(at: number = this.#now()): void {
    this.#last = Math.max(this.#last, at);
  }

  /** Earliest time (ms since epoch) the next reload may start; ≤ now when allowed now. */
  nextAllowedAt(): number {
    return Number.isFinite(this.#last) ? this.#last + this.#minIntervalMs : this.#now();
  }

  canReloadNow(): boolean {
    return this.nextAllowedAt() <= this.#now();
  }

  /** Resolves when a reload is allowed. */
  async wait(): Promise<void> {
    const ms = this.nextAllowedAt() - this.#now();
    if (ms > 0) await new Promise((r) => setTimeout(r, ms));
  }
}
