/**
 * Steady traffic through HAProxy, 127.0.0.1 only, a new connection per request: 4 loops each
 * sending at most one request per 25 ms (≤ 160 req/s), plus one loop of slow requests
 * (600 ms) so that drains have in-flight requests to finish. Bounded by `deadline` and
 * `maxRequests`; `stop()` ends it at once (requests in flight are cancelled, not counted).
 */
import { httpRequest, sleep } from '../../testkit/index.js';
import type { HostCount } from './screen.js';

const WORKERS = 4;
const PERIOD_MS = 25;
const SLOW_PATH = '/slow?ms=600';

export class Traffic {
  readonly hosts: string[] = [];
  readonly stats = new Map<string, HostCount>();
  sent = 0;
  readonly #abort = new AbortController();
  #loops: Promise<void>[] = [];

  /**
   * @param port HAProxy's HTTP port on 127.0.0.1
   * @param deadline last moment to send, ms since epoch
   * @param maxRequests hard cap on requests
   * @param slowHost the host that gets the slow requests
   */
  constructor(
    readonly port: number,
    readonly deadline: number,
    readonly maxRequests: number,
    readonly slowHost: string,
  ) {}

  add(host: string): void {
    if (!this.hosts.includes(host)) this.hosts.push(host);
    if (!this.stats.has(host)) this.stats.set(host, { ok: 0, failed: 0, failures: {} });
  }

  start(): void {
    for (let w = 0; w < WORKERS; w++) this.#loops.push(this.#loop(w, PERIOD_MS, '/'));
    this.#loops.push(this.#loop(0, 0, SLOW_PATH, this.slowHost));
  }

  get stopped(): boolean {
    return this.#abort.signal.aborted;
  }

  async #loop(offset: number, periodMs: number, pathName: string, onlyHost?: string): Promise<void> {
    const signal = this.#abort.signal;
    let i = offset;
    while (!signal.aborted && Date.now() < this.deadline && this.sent < this.maxRequests) {
      const host = onlyHost ?? this.hosts[i++ % this.hosts.length];
      if (!host) {
        await sleep(50, signal).catch(() => undefined);
        continue;
      }
      const started = Date.now();
      this.sent++;
      const r = await httpRequest({ port: this.port, host, path: pathName, signal });
      // Cancelled by stop(): neither a success nor a failure of HAProxy.
      if (r.error === 'ABORTED') break;
      const s = this.stats.get(host)!;
      if (r.ok) s.ok++;
      else {
        s.failed++;
        const k = r.error ?? String(r.status);
        s.failures[k] = (s.failures[k] ?? 0) + 1;
      }
      const wait = periodMs - (Date.now() - started);
      if (wait > 0) await sleep(wait, signal).catch(() => undefined);
    }
  }

  get ok(): number {
    return [...this.stats.values()].reduce((n, s) => n + s.ok, 0);
  }

  get failed(): number {
    return [...this.stats.values()].reduce((n, s) => n + s.failed, 0);
  }

  get failures(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const s of this.stats.values()) for (const [k, v] of Object.entries(s.failures)) out[k] = (out[k] ?? 0) + v;
    return out;
  }

  /** Stops sending now and cancels what is in flight; resolves when every loop has ended. */
  async stop(): Promise<void> {
    this.#abort.abort();
    await Promise.all(this.#loops);
  }
}
