/**
 * The confirmed-state record: which haproxy.cfg HAProxy really runs. haproxy.cfg must be
 * renamed into place before the master `reload` (the master re-reads the same path), so the
 * file alone cannot tell a restarted updater whether that reload happened. The record
 * (`<state-dir>/applied.json`, the config text and its hash) is written atomically only
 * once HAProxy was started from the file or the master confirmed a reload; at start a file
 * on disk that differs from the record means a crash in between: the daemon then believes
 * the recorded config and reloads.
 *
 * Also here: the server-state file HAProxy loads at its next start or reload is kept equal
 * to what runs (verify passes), and the test-only crash hook.
 */
import { readFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { ConfigError } from '../errors.js';
import { logger } from '../log.js';
import { atomicWrite, dumpServerState, type StateSource } from '../reload/index.js';
import { parseServersState } from '../runtime/index.js';

const log = logger('applied');

/** How the recorded config came to run. */
export type ConfirmedBy = 'start' | 'reload' | 'runtime';

export interface AppliedRecord {
  readonly version: 1;
  readonly sha256: string;
  readonly config: string;
  readonly by: ConfirmedBy;
  readonly confirmedAt: string;
}

/** How HAProxy came up when the daemon started: spawned from the file, or found running. */
export type StartedHow = 'started' | 'adopted' | 'external';

export interface StartState {
  /** The config the daemon takes as running. */
  running: string;
  /** The file on disk was never confirmed running: reload in the first pass. */
  mustReload: boolean;
}

export function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/**
 * Pure start decision. HAProxy spawned now loaded the file: that runs. Otherwise only a
 * record equal to the file proves the file runs; a differing record is what runs; with no
 * record nothing is known (an older updater, a lost file): reload to be sure.
 */
export function startState(onDisk: string | null, record: AppliedRecord | null, how: StartedHow): StartState {
  if (how === 'started') return { running: onDisk ?? '', mustReload: false };
  if (record && onDisk !== null && record.sha256 === sha256(onDisk)) return { running: onDisk, mustReload: false };
  if (record) return { running: record.config, mustReload: true };
  return { running: onDisk ?? '', mustReload: true };
}

export class AppliedState {
  readonly #file: string;

  /** `file`: `<state-dir>/applied.json`. */
  constructor(file: string) {
    this.#file = file;
  }

  /** The record, or null when there is none or it is unreadable (logged: the daemon then reloads). */
  async read(): Promise<AppliedRecord | null> {
    let text: string;
    try {
      text = await readFile(this.#file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') log.warn({ err, file: this.#file }, 'confirmed-state record unreadable; treating the running config as unknown');
      return null;
    }
    try {
      const r = JSON.parse(text) as Partial<AppliedRecord>;
      if (r.version === 1 && typeof r.config === 'string' && r.sha256 === sha256(r.config)) return r as AppliedRecord;
    } catch {
      // fall through
    }
    log.warn({ file: this.#file }, 'confirmed-state record corrupt; treating the running config as unknown');
    return null;
  }

  /** Records `config` as running. Mode 0600: the config carries the stats password. */
  async confirm(config: string, by: ConfirmedBy): Promise<void> {
    const record: AppliedRecord = { version: 1, sha256: sha256(config), config, by, confirmedAt: new Date().toISOString() };
    await atomicWrite(this.#file, JSON.stringify(record) + '\n', 0o600);
  }

  /**
   * At daemon start, once HAProxy runs: which config runs, and whether to reload. Records
   * the file when HAProxy was started from it.
   */
  async atStart(onDisk: string | null, how: StartedHow): Promise<StartState> {
    const record = how === 'started' ? null : await this.read();
    const state = startState(onDisk, record, how);
    if (how === 'started') await this.confirm(state.running, 'start');
    else if (state.mustReload) {
      log.warn(
        { how, recorded: record?.sha256.slice(0, 12) ?? null, onDisk: onDisk === null ? null : sha256(onDisk).slice(0, 12) },
        record
          ? 'haproxy.cfg on disk was never confirmed running (the updater stopped between writing it and the reload): reloading'
          : 'no record of the config HAProxy runs: reloading once to be sure',
      );
    }
    return state;
  }
}

/** Per server, what a start or reload takes from the server-state file: address, port, admin state, weight. */
function stateKey(text: string): string | null {
  try {
    return parseServersState(text)
      .map((r) => `${r.beName}/${r.srvName} ${r.srvAddr}:${r.srvPort} ${r.srvAdminState} ${r.srvUweight}`)
      .sort()
      .join('\n');
  } catch {
    return null;
  }
}

/**
 * Verify pass: the server-state file holds what runs, so a HAProxy (re)started by anyone
 * loads today's slots, not those of the last reload. Rewritten only when a field HAProxy
 * loads from it differs (check results and timers change all the time). True when rewritten.
 */
export async function repairServerStateFile(runtime: StateSource, file: string): Promise<boolean> {
  const dump = await dumpServerState(runtime);
  const onDisk = await readFile(file, 'utf8').catch(() => null);
  if (onDisk !== null && stateKey(onDisk) === stateKey(dump)) return false;
  await atomicWrite(file, dump);
  log.warn({ file }, 'server-state file differed from the running servers; rewritten');
  return true;
}

/** Where the test-only hook kills the updater. */
export type CrashPoint = 'after-rename';
export const TEST_CRASH_ENV = 'HAPROXY_UPDATER_TEST_CRASH_AT';

/**
 * Test only: `HAPROXY_UPDATER_TEST_CRASH_AT=after-rename` makes the updater SIGKILL itself
 * right after a new haproxy.cfg is renamed into place, before the master reload (crash-safety
 * tests). Read once at daemon start; unset (the default) it does nothing.
 */
export function testCrashPoint(env: NodeJS.ProcessEnv = process.env): CrashPoint | null {
  const v = env[TEST_CRASH_ENV];
  if (v === undefined || v === '') return null;
  if (v === 'after-rename') return v;
  throw new ConfigError(`${TEST_CRASH_ENV}='${v}': unknown crash point (test only; the one point is 'after-rename')`, { env: TEST_CRASH_ENV, value: v });
}
