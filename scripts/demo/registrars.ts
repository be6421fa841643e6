/**
 * The demo's service instances: a small HTTP app (testkit's upstream server, with counters
 * around a "mark" for drain checks) and, per instance, one real `haproxy-updater register`
 * child that keeps its key alive and is restarted when it exits on its own.
 */
import { BIN, sleep, startBackend, startProcess, stopProcess, type Backend, type Proc } from '../../testkit/index.js';

export const PREFIX = '/haproxy-discover';

/** An app instance answering `<id>`; counts what it served before and after `mark()`. */
export class App {
  markAt = 0;
  /** Requests that started before `mark()` and finished after it. */
  finishedAfterMark = 0;
  /** Requests that started after `mark()`. */
  hitsAfterMark = 0;
  lastHitAfterMarkAt = 0;
  #server: Backend | null = null;

  constructor(readonly id: string) {}

  async listen(): Promise<this> {
    this.#server = await startBackend(this.id, {
      onRequest: (started) => {
        if (this.markAt && started >= this.markAt) {
          this.hitsAfterMark++;
          this.lastHitAfterMarkAt = started;
        }
        return () => {
          if (this.markAt && started < this.markAt) this.finishedAfterMark++;
        };
      },
    });
    return this;
  }

  get #s(): Backend {
    if (!this.#server) throw new Error(`app ${this.id} is not listening`);
    return this.#server;
  }

  get port(): number {
    return this.#s.port;
  }
  get inflight(): number {
    return this.#s.inflight;
  }
  get firstHitAt(): number {
    return this.#s.firstHitAt;
  }
  get lastHitAt(): number {
    return this.#s.lastHitAt;
  }

  mark(): void {
    this.markAt = Date.now();
    this.finishedAfterMark = 0;
    this.hitsAfterMark = 0;
    this.lastHitAfterMarkAt = 0;
  }

  /** Lets in-flight requests finish (at most `graceMs`), then closes. */
  async close(graceMs = 5000): Promise<void> {
    await this.#server?.close({ graceMs });
  }
}

/** What a registrar reports to, and asks of, the demo. */
export interface RegistrarHost {
  readonly etcdEndpoint: string;
  /** True once the demo is stopping: no restarts then. */
  readonly stopping: boolean;
  event(msg: string): void;
  registrarStarted(pid: number): void;
  registrarRestarted(): void;
}

/** One `haproxy-updater register` child per app instance, restarted if it exits on its own. */
export class Registrar {
  proc: Proc | null = null;
  want = true;
  failedStarts = 0;
  registeredAt = 0;
  leaseId: string | null = null;
  #registered!: Promise<number>;
  #resolveRegistered!: (t: number) => void;
  #restartTimer: NodeJS.Timeout | null = null;

  constructor(
    readonly host: RegistrarHost,
    readonly service: string,
    readonly domain: string,
    readonly app: App,
  ) {
    this.#resetRegistered();
  }

  #resetRegistered(): void {
    this.#registered = new Promise((r) => (this.#resolveRegistered = r));
  }

  get id(): string {
    return this.app.id;
  }

  get key(): string {
    return `${PREFIX}/http-services/${this.service}/upstreams/${this.id}`;
  }

  start(): void {
    if (this.host.stopping) return;
    const args = [
      BIN, 'register',
      '--etcd', this.host.etcdEndpoint,
      '--service', this.service,
      '--domain', this.domain,
      '--addr', `127.0.0.1:${this.app.port}`,
      '--id', this.id,
      '--ttl', '5s',
    ];
    const proc = startProcess(process.execPath, args);
    this.proc = proc;
    this.host.registrarStarted(proc.pid);
    let buf = '';
    proc.child.stdout?.on('data', (chunk: Buffer) => {
      buf += chunk.toString('utf8');
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.includes('upstream registered')) this.#onRegistered(line);
      }
    });
    proc.child.once('exit', (code, signal) => this.#onExit(proc, code, signal));
  }

  #onRegistered(line: string): void {
    try {
      const j = JSON.parse(line) as { time?: string; leaseId?: string };
      this.registeredAt = j.time ? Date.parse(j.time) : Date.now();
      this.leaseId = j.leaseId ?? null;
    } catch {
      this.registeredAt = Date.now();
    }
    this.failedStarts = 0;
    this.#resolveRegistered(this.registeredAt);
  }

  #onExit(proc: Proc, code: number | null, signal: NodeJS.Signals | null): void {
    if (!this.want || this.host.stopping || this.proc !== proc) return;
    const lost = proc.output.some((l) => l.includes('lease lost'));
    const why = lost ? 'its etcd lease was lost' : `exit ${code ?? signal}`;
    if (this.registeredAt) {
      this.host.event(`registrar of ${this.id} exited (${why}); restarting it`);
      this.host.registrarRestarted();
    } else this.failedStarts++;
    this.registeredAt = 0;
    this.#resetRegistered();
    // Bounded: at most 30 consecutive failed starts (etcd down), 1 s apart.
    if (this.failedStarts > 30) {
      this.host.event(`registrar of ${this.id} keeps failing; giving up: ${proc.output.slice(-3).join(' | ')}`);
      return;
    }
    this.#restartTimer = setTimeout(() => {
      this.#restartTimer = null;
      if (this.want) this.start();
    }, 1000);
  }

  /** Resolves with the time etcd accepted the registration (from the registrar's log). */
  async waitRegistered(timeoutMs = 20_000, signal?: AbortSignal): Promise<number> {
    const late = sleep(timeoutMs, signal).then(() => {
      throw new Error(`${this.id}: not registered after ${timeoutMs} ms: ${this.proc?.output.slice(-5).join(' | ')}`);
    });
    late.catch(() => undefined);
    return Promise.race([this.#registered, late]);
  }

  get alive(): boolean {
    return this.proc !== null && this.proc.child.exitCode === null && this.proc.child.signalCode === null;
  }

  /** SIGTERM (SIGKILL after `graceMs`): the registrar revokes its lease, so the key disappears now. */
  async stop(graceMs = 5000): Promise<void> {
    this.want = false;
    if (this.#restartTimer) clearTimeout(this.#restartTimer);
    if (this.proc) await stopProcess(this.proc, graceMs);
  }
}
