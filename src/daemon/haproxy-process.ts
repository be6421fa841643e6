/**
 * `--haproxy managed`: starts `haproxy -W -S <master.sock> -f <cfg>` and supervises it.
 * An HAProxy left running by a previous updater (killed with SIGKILL) is adopted through
 * its master socket instead of started twice, so restarting the updater costs no reload
 * and no connection. Output lines go to the log; an unexpected exit is reported to the
 * daemon, which starts it again (the worker dying takes the master down in 2.6 unless
 * `no-exit-on-failure`, and a fresh start with the server-state file is the clean path).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { logger } from '../log.js';
import { MasterClient } from '../runtime/index.js';
import { childEnv } from '../childenv.js';

/**
 * The level a HAProxy output line means: ALERT/EMERG are errors; a server going UP or DOWN
 * (reported as [WARNING]) is routine for an updater that adds and drains servers; other
 * warnings stay warnings.
 */
export function haproxyLineLevel(line: string): 'error' | 'warn' | 'info' {
  if (/\[(ALERT|EMERG)\]/.test(line)) return 'error';
  if (/\bServer \S+ is (UP|DOWN|going DOWN for maintenance)\b|\bis (UP|DOWN), reason:/.test(line)) return 'info';
  if (/\[WARNING\]/.test(line)) return 'warn';
  return 'info';
}

const log = logger('haproxy');

export type ManagedState = 'stopped' | 'starting' | 'running' | 'adopted' | 'stopping';

export interface ManagedHaproxyOptions {
  /** HAProxy executable. Default `haproxy`. */
  bin?: string;
  cfgPath: string;
  masterSocket: string;
  /** How long to wait for the master CLI to show a worker. Default 15000 ms. */
  startTimeoutMs?: number;
  /** Called when a spawned HAProxy exits without stop() having been called. */
  onUnexpectedExit?: (code: number | null, signal: NodeJS.Signals | null) => void;
}

export class ManagedHaproxy {
  readonly #opts: ManagedHaproxyOptions;
  readonly #master: MasterClient;
  #child: ChildProcess | null = null;
  #masterPid = 0;
  #state: ManagedState = 'stopped';

  constructor(opts: ManagedHaproxyOptions) {
    this.#opts = opts;
    this.#master = new MasterClient({ path: opts.masterSocket }, { timeoutMs: 2000 });
  }

  get state(): ManagedState {
    return this.#state;
  }
  get masterPid(): number {
    return this.#masterPid;
  }

  /** Adopts a running HAProxy on the master socket, or starts one. */
  async start(): Promise<'adopted' | 'started'> {
    const running = await this.#master.showProc().catch(() => null);
    if (running && running.workers.length > 0) {
      this.#masterPid = running.masterPid;
      this.#state = 'adopted';
      log.info({ masterPid: running.masterPid, reloads: running.reloads }, 'adopted the HAProxy already running on the master socket');
      return 'adopted';
    }
    this.#state = 'starting';
    // mode 600: the master CLI can reload and kill HAProxy; only the updater's uid may use it.
    const args = ['-W', '-S', `${this.#opts.masterSocket},mode,600,level,admin`, '-f', this.#opts.cfgPath];
    // childEnv: the admin socket's `show env` must not reveal the updater's secrets.
    const child = spawn(this.#opts.bin ?? 'haproxy', args, { env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    this.#child = child;
    for (const stream of [child.stdout, child.stderr]) {
      if (!stream) continue;
      createInterface({ input: stream }).on('line', (line) => {
        // The access log (`--access-log stdout`) is already one JSON object per line: passed on as it is.
        if (stream === child.stdout && line.startsWith('{"type":"haproxy"')) {
          process.stdout.write(line + '\n');
          return;
        }
        log[haproxyLineLevel(line)]({ line }, 'haproxy');
      });
    }
    child.once('exit', (code, signal) => {
      const expected = this.#state === 'stopping';
      this.#child = null;
      this.#state = 'stopped';
      if (!expected) {
        log.error({ code, signal }, 'haproxy exited unexpectedly');
        this.#opts.onUnexpectedExit?.(code, signal);
      }
    });
    const deadline = Date.now() + (this.#opts.startTimeoutMs ?? 15_000);
    for (;;) {
      if (!this.#child) throw new Error('haproxy exited during start-up (see the haproxy log lines above)');
      const proc = await this.#master.showProc().catch(() => null);
      if (proc && proc.workers.length > 0) {
        this.#masterPid = proc.masterPid;
        break;
      }
      if (Date.now() > deadline) {
        await this.stop();
        throw new Error(`haproxy did not show a worker on ${this.#opts.masterSocket} within the start timeout`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    this.#state = 'running';
    log.info({ masterPid: this.#masterPid, pid: child.pid }, 'haproxy started');
    return 'started';
  }

  /** True when the master process is alive. */
  alive(): boolean {
    if (!this.#masterPid) return false;
    try {
      process.kill(this.#masterPid, 0);
      return true;
    } catch {
      return false;
    }
  }

  /** Soft stop (SIGUSR1: finish in-flight requests), SIGTERM after `graceMs`, SIGKILL last. */
  async stop(graceMs = 5000): Promise<void> {
    const pid = this.#child?.pid ?? this.#masterPid;
    if (!pid) return;
    this.#state = 'stopping';
    const gone = () => {
      try {
        process.kill(pid, 0);
        return false;
      } catch {
        return true;
      }
    };
    const signal = (s: NodeJS.Signals) => {
      try {
        process.kill(pid, s);
      } catch {
        /* already gone */
      }
    };
    signal('SIGUSR1');
    const deadline = Date.now() + graceMs;
    while (!gone() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    if (!gone()) signal('SIGTERM');
    const hard = Date.now() + 2000;
    while (!gone() && Date.now() < hard) await new Promise((r) => setTimeout(r, 50));
    if (!gone()) signal('SIGKILL');
    this.#state = 'stopped';
    this.#masterPid = 0;
  }
}
