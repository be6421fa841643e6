/**
 * Master CLI (`haproxy -W -S <master.sock>`): `show proc` and a reload whose outcome is
 * verified instead of assumed. Two ways, chosen by the `syncReload` capability:
 *  - 2.6 (and any version the capability table does not know): the master answers `reload`
 *    with nothing and re-executes itself (~0.1 s, during which its socket refuses or resets
 *    connections); the result is only visible in `show proc` afterwards: the master's reload
 *    counter goes up, and either `[failed: 0]` with a new worker PID (success) or
 *    `[failed: N>0]` with the old worker still serving (the new config did not load).
 *  - 2.8+: `reload` answers once the outcome is known: `Success=1|0`, `--`, then the
 *    start-up log, whose ALERT lines say why a config was refused.
 * After a refused reload 3.1+ lists the worker that keeps serving under `# old workers`
 * (with `# workers` empty), 2.6/3.0 under `# workers`: `servingWorkers()` covers both.
 */
import { ReloadFailedError, ReloadTimeoutError, ReplyParseError, type UpdaterError } from '../errors.js';
import { logger } from '../log.js';
import { makeCommand, type Command } from './command.js';
import { DEFAULT_TIMEOUT_MS, masterCommand, type SocketTarget } from './socket.js';
import { CONSERVATIVE, type Capabilities } from './capabilities.js';

const log = logger('runtime');

export interface ProcEntry {
  pid: number;
  /** `worker`, or a program name. */
  type: string;
  /** Reloads this process has lived through. */
  reloads: number;
  /** As printed, e.g. `0d00h00m58s`. */
  uptime: string;
  uptimeSec: number;
  version: string;
}

export interface ProcInfo {
  masterPid: number;
  /** Reloads of the master since start (successful or not). */
  reloads: number;
  /** Failed reloads since the last successful one. */
  failed: number;
  uptime: string;
  version: string;
  /** Current worker(s). */
  workers: ProcEntry[];
  /** Workers of earlier generations still finishing connections. */
  oldWorkers: ProcEntry[];
  programs: ProcEntry[];
}

export interface ReloadOutcome {
  reloadsBefore: number;
  reloadsAfter: number;
  workerPid: number;
  previousWorkerPid: number | null;
  durationMs: number;
}

export function showProc(): Command {
  return makeCommand('show proc');
}

export function reloadCommand(): Command {
  return makeCommand('reload');
}

function uptimeSeconds(uptime: string): number {
  const m = /^(\d+)d(\d+)h(\d+)m(\d+)s$/.exec(uptime);
  if (!m) return NaN;
  return Number(m[1]) * 86400 + Number(m[2]) * 3600 + Number(m[3]) * 60 + Number(m[4]);
}

/** Parses `show proc` (HAProxy 2.5+ layout: `<PID> <type> <reloads> <uptime> <version>`). */
export function parseShowProc(text: string): ProcInfo {
  const lines = text.split('\n').filter((l) => l.trim() !== '');
  if (!lines[0]?.startsWith('#<PID>')) throw new ReplyParseError('show proc: missing "#<PID>" header', { reply: text.slice(0, 200) });
  const master = /^(\d+)\s+master\s+(\d+)\s+\[failed:\s*(\d+)\]\s+(\S+)\s+(\S+)/.exec(lines[1] ?? '');
  if (!master) throw new ReplyParseError('show proc: no master line', { line: lines[1] });
  const info: ProcInfo = {
    masterPid: Number(master[1]),
    reloads: Number(master[2]),
    failed: Number(master[3]),
    uptime: master[4] ?? '',
    version: master[5] ?? '',
    workers: [],
    oldWorkers: [],
    programs: [],
  };
  let section: ProcEntry[] | null = null;
  for (const line of lines.slice(2)) {
    if (line.startsWith('#')) {
      const name = line.slice(1).trim();
      section = name === 'workers' ? info.workers : name === 'old workers' ? info.oldWorkers : name === 'programs' ? info.programs : null;
      if (!section) throw new ReplyParseError('show proc: unknown section', { line });
      continue;
    }
    const m = /^(\d+)\s+(\S+)\s+(\d+)\s+(\S+)(?:\s+(\S+))?/.exec(line);
    if (!m || !section) throw new ReplyParseError('show proc: unexpected line', { line });
    const uptime = m[4] ?? '';
    section.push({ pid: Number(m[1]), type: m[2] ?? '', reloads: Number(m[3]), uptime, uptimeSec: uptimeSeconds(uptime), version: m[5] ?? '' });
  }
  return info;
}

/**
 * The workers serving new connections: those under `# workers`; when that section is empty
 * (3.1+ after a refused reload), the newest generation under `# old workers` (fewest reloads).
 */
export function servingWorkers(proc: Pick<ProcInfo, 'workers' | 'oldWorkers'>): ProcEntry[] {
  if (proc.workers.length > 0) return proc.workers;
  const newest = Math.min(...proc.oldWorkers.map((w) => w.reloads));
  return proc.oldWorkers.filter((w) => w.reloads === newest);
}

export interface ReloadReply {
  success: boolean;
  /** The start-up log lines after `--`. */
  log: string[];
  /** Its `[ALERT]` lines without the `[ALERT]    (pid) : ` prefix: why a config was refused. */
  alerts: string[];
}

/** The synchronous reply of `reload` (2.8+); null when the text is not one (2.6 answers nothing). */
export function parseReloadReply(text: string): ReloadReply | null {
  const lines = text.split('\n');
  const m = /^Success=([01])\s*$/.exec(lines[0] ?? '');
  if (!m) return null;
  const sep = lines.indexOf('--');
  const log = (sep < 0 ? [] : lines.slice(sep + 1)).filter((l) => l.trim() !== '');
  const alerts = log.filter((l) => l.startsWith('[ALERT]')).map((l) => l.replace(/^\[ALERT\]\s*\(\d+\)\s*:\s*/, ''));
  return { success: m[1] === '1', log, alerts };
}

export interface MasterClientOptions {
  /** Deadline of one master CLI call (connect + reply), ms. Default 5000. */
  timeoutMs?: number;
}

export interface ReloadOptions {
  /** Deadline for the whole reload, from `show proc` before to the verdict, ms. Default 15000. */
  timeoutMs?: number;
  /** Pause between `show proc` polls, ms. Default 25. */
  pollIntervalMs?: number;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export class MasterClient {
  readonly #target: SocketTarget;
  readonly #timeoutMs: number;
  #caps: Capabilities = CONSERVATIVE;

  constructor(target: SocketTarget, opts: MasterClientOptions = {}) {
    this.#target = target;
    this.#timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  }

  /** From `capabilitiesFor()` of the running version; until called, the conservative set. */
  useCapabilities(caps: Capabilities): void {
    this.#caps = caps;
  }

  async showProc(timeoutMs = this.#timeoutMs): Promise<ProcInfo> {
    return parseShowProc(await masterCommand(this.#target, showProc(), { timeoutMs }));
  }

  /**
   * Reloads and waits for the verdict. Run `haproxy -c -f` on the new config first: a
   * config that does not load leaves the old worker running and throws `ReloadFailedError`.
   * Throws `ReloadTimeoutError` when the reload counter does not move (or no new worker
   * appears) in time. Transport errors while the master re-executes are expected and retried.
   */
  async reload(opts: ReloadOptions = {}): Promise<ReloadOutcome> {
    const timeoutMs = opts.timeoutMs ?? 15_000;
    // Short: the reload guard (if any) stays engaged until this sees the new worker.
    const pollMs = opts.pollIntervalMs ?? 25;
    const deadline = Date.now() + timeoutMs;
    const remaining = () => Math.max(1, Math.min(this.#timeoutMs, deadline - Date.now()));
    const before = await this.showProc(remaining());
    const serving = servingWorkers(before);
    const previousPids = new Set([...before.workers, ...before.oldWorkers].map((w) => w.pid));
    const previousWorkerPid = serving[0]?.pid ?? null;
    const started = performance.now();
    let lastError: UpdaterError | undefined;

    // Send `reload`. If the connection was never made, nothing was sent: try again. Once
    // connected, the master may reset the connection as it re-executes; that is success.
    let reply = '';
    for (;;) {
      try {
        // A synchronous reply comes once the new worker is up (slow for big configs): allow
        // the whole reload deadline; a timeout falls back to polling `show proc`.
        const callMs = this.#caps.syncReload ? Math.max(1, deadline - Date.now()) : remaining();
        reply = await masterCommand(this.#target, reloadCommand(), { timeoutMs: callMs });
        break;
      } catch (err) {
        const e = err as UpdaterError;
        if (!e.recoverable) throw e;
        if (e.context.phase !== 'connect') break;
        lastError = e;
        if (Date.now() >= deadline) {
          throw new ReloadTimeoutError('reload could not be sent before the deadline', { reloadsBefore: before.reloads, timeoutMs }, { cause: e });
        }
        await sleep(pollMs);
      }
    }

    const sync = this.#caps.syncReload ? parseReloadReply(reply) : null;
    if (sync && !sync.success) {
      const proc = await this.showProc(remaining()).catch(() => null);
      const context = {
        reloadsBefore: before.reloads,
        reloads: proc?.reloads ?? null,
        failed: proc?.failed ?? null,
        workerPid: proc ? (servingWorkers(proc)[0]?.pid ?? null) : null,
        alerts: sync.alerts,
      };
      log.warn(context, 'reload refused: old worker kept running');
      const why = sync.alerts.length ? sync.alerts.join('; ') : sync.log.slice(-3).join('; ');
      throw new ReloadFailedError(`reload refused by HAProxy: ${why || 'no reason given'}; the previous worker keeps serving`, context);
    }
    // Success=1 (the new worker is already listed) or no synchronous reply: `show proc` decides.

    let last: ProcInfo | undefined;
    let wait = sync === null; // after Success=1 the first `show proc` already shows the new worker
    for (;;) {
      if (wait) await sleep(pollMs);
      wait = true;
      try {
        last = await this.showProc(remaining());
        lastError = undefined;
      } catch (err) {
        // ECONNREFUSED/ECONNRESET while the master re-executes; keep polling until the deadline.
        lastError = err as UpdaterError;
      }
      if (last && last.reloads > before.reloads) {
        const context = { reloadsBefore: before.reloads, reloads: last.reloads, failed: last.failed, workerPid: servingWorkers(last)[0]?.pid ?? null };
        if (last.failed > 0) {
          log.warn(context, 'reload failed: old worker kept running');
          throw new ReloadFailedError(`reload failed (failed: ${last.failed}); the previous worker keeps serving`, context);
        }
        const fresh = last.workers.find((w) => !previousPids.has(w.pid));
        if (fresh) {
          const outcome = { reloadsBefore: before.reloads, reloadsAfter: last.reloads, workerPid: fresh.pid, previousWorkerPid, durationMs: Math.round(performance.now() - started) };
          log.info(outcome, 'reload succeeded');
          return outcome;
        }
      }
      if (Date.now() >= deadline) {
        throw new ReloadTimeoutError(
          `reload not confirmed within ${timeoutMs} ms`,
          { reloadsBefore: before.reloads, reloads: last?.reloads ?? null, failed: last?.failed ?? null, timeoutMs },
          lastError ? { cause: lastError } : undefined,
        );
      }
    }
  }
}
