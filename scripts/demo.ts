/**
 * `npm run demo`: the main job of haproxy-updater, live, on this machine.
 *
 * Starts etcd, the updater with a managed HAProxy (temp state dir, loopback ports), a few
 * small HTTP apps that register themselves with the real `haproxy-updater register`, sends
 * steady bounded traffic through HAProxy and plays a scripted story (scale up/down, drain,
 * new domain, new service, etcd outage). Reloads are read from HAProxy's own master CLI
 * (`show proc`), not from the updater. Ends by itself (or on Ctrl-C), cleans up every
 * process and prints a summary; the last line is machine-readable (`DEMO-SUMMARY {json}`).
 *
 *   npm run demo                      # ~60 s story
 *   npm run demo -- --short           # ~20 s (what the test runs)
 *   npm run demo -- --duration 90     # longer dwell between steps
 *   npm run demo -- --keep            # leave the stack running for exploration (Ctrl-C ends)
 *
 * Exit code 0 when no request failed and no reload happened for a membership change.
 */
import http from 'node:http';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import {
  startEtcd,
  startProcess,
  stopProcess,
  socketCommand,
  freePort,
  tempDir,
  removeDir,
  waitFor,
  sleep,
  percentile,
  execFileP,
  type EtcdHandle,
  type Proc,
} from '../test/integration/harness.js';
import { startUpdater, masterView, killHaproxy, BIN, type UpdaterHandle } from '../test/integration/updater.js';

// HAProxy lives in /usr/sbin on Debian; the updater starts it by name.
for (const dir of ['/usr/sbin', '/sbin']) {
  if (!(process.env.PATH ?? '').split(':').includes(dir)) process.env.PATH = `${process.env.PATH ?? ''}:${dir}`;
}

// ------------------------------------------------------------------------------ options

interface Options {
  durationS: number;
  keep: boolean;
  keepMaxS: number;
  short: boolean;
  /** How long etcd stays down in step 6, ms. */
  outageMs: number | null;
}

function usage(): string {
  return `usage: npm run demo -- [--short] [--duration <s>] [--keep]
  --short           short story (~20 s of traffic), as the test runs it
  --duration <s>    length of the traffic phase in seconds (default 60; 15-600)
  --outage <s>      how long etcd stays down in step 6 (default 6, --short 3; 1-60).
                    Registrar leases (TTL 5 s) are lost after ~10 s without etcd: the
                    registrars exit and the demo restarts them
  --keep            leave etcd, HAProxy, the updater and the apps running afterwards
                    (until Ctrl-C, at most 1 h), and print how to explore them`;
}

function parseOptions(argv: string[]): Options {
  const o: Options = { durationS: 60, keep: false, keepMaxS: 3600, short: false, outageMs: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--short') {
      o.short = true;
      o.durationS = 20;
    } else if (a === '--keep') o.keep = true;
    else if (a === '--duration' || a.startsWith('--duration=')) {
      const v = a.includes('=') ? a.slice(a.indexOf('=') + 1) : argv[++i];
      const n = Number(v);
      if (!Number.isFinite(n) || n < 15 || n > 600) throw new Error(`--duration: '${v}' is not a number of seconds 15-600`);
      o.durationS = n;
    } else if (a === '--outage' || a.startsWith('--outage=')) {
      const v = a.includes('=') ? a.slice(a.indexOf('=') + 1) : argv[++i];
      const n = Number(v);
      if (!Number.isFinite(n) || n < 1 || n > 60) throw new Error(`--outage: '${v}' is not a number of seconds 1-60`);
      o.outageMs = n * 1000;
    } else if (a === '--help' || a === '-h') {
      process.stdout.write(usage() + '\n');
      process.exit(0);
    } else throw new Error(`unknown argument '${a}'\n${usage()}`);
  }
  return o;
}

// ------------------------------------------------------------------------------ output

const TTY = Boolean(process.stdout.isTTY);
const C = TTY
  ? { b: (s: string) => `\x1b[1m${s}\x1b[0m`, dim: (s: string) => `\x1b[2m${s}\x1b[0m`, g: (s: string) => `\x1b[32m${s}\x1b[0m`, r: (s: string) => `\x1b[31m${s}\x1b[0m`, y: (s: string) => `\x1b[33m${s}\x1b[0m`, c: (s: string) => `\x1b[36m${s}\x1b[0m` }
  : { b: (s: string) => s, dim: (s: string) => s, g: (s: string) => s, r: (s: string) => s, y: (s: string) => s, c: (s: string) => s };

let tableLines = 0;
let tableText: (() => string[]) | null = null;
const t0 = Date.now();
const elapsed = () => ((Date.now() - t0) / 1000).toFixed(1).padStart(5);

function clearTable(): void {
  if (TTY && tableLines > 0) process.stdout.write(`\x1b[${tableLines}A\x1b[0J`);
  tableLines = 0;
}

function drawTable(): void {
  if (!TTY || !tableText) return;
  clearTable();
  const lines = tableText();
  process.stdout.write(lines.join('\n') + '\n');
  tableLines = lines.length;
}

/** A persistent line above the live table. */
function say(msg: string): void {
  clearTable();
  process.stdout.write(`${C.dim(`[${elapsed()}s]`)} ${msg}\n`);
  drawTable();
}

function caption(step: number, title: string, note: string): void {
  clearTable();
  process.stdout.write(`\n${C.dim(`[${elapsed()}s]`)} ${C.b(C.c(`STEP ${step}: ${title}`))}\n${' '.repeat(9)}${C.dim(note)}\n`);
  drawTable();
}

// ------------------------------------------------------------------------------ demo apps

/** A small in-process HTTP app: answers `<id>` (and `/slow?ms=N` after N ms), counts what it served. */
class App {
  hits = 0;
  inflight = 0;
  firstHitAt = 0;
  lastHitAt = 0;
  markAt = 0;
  /** Requests that started before `mark()` and finished after it. */
  finishedAfterMark = 0;
  /** Requests that started after `mark()`. */
  hitsAfterMark = 0;
  lastHitAfterMarkAt = 0;
  port = 0;
  private readonly server: http.Server;

  constructor(readonly id: string) {
    this.server = http.createServer((req, res) => {
      const started = Date.now();
      this.hits++;
      this.inflight++;
      if (!this.firstHitAt) this.firstHitAt = started;
      this.lastHitAt = started;
      if (this.markAt && started >= this.markAt) {
        this.hitsAfterMark++;
        this.lastHitAfterMarkAt = started;
      }
      const m = /^\/slow\?ms=(\d{1,4})$/.exec(req.url ?? '');
      const send = () => {
        this.inflight--;
        if (this.markAt && started < this.markAt) this.finishedAfterMark++;
        res.writeHead(200, { 'content-type': 'text/plain' }).end(`${id}\n`);
      };
      if (m) setTimeout(send, Number(m[1]));
      else send();
    });
    this.server.keepAliveTimeout = 1000;
  }

  async listen(): Promise<this> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', () => resolve());
    });
    const a = this.server.address();
    this.port = typeof a === 'object' && a ? a.port : 0;
    return this;
  }

  mark(): void {
    this.markAt = Date.now();
    this.finishedAfterMark = 0;
    this.hitsAfterMark = 0;
    this.lastHitAfterMarkAt = 0;
  }

  /** Lets in-flight requests finish (bounded), then closes. */
  async close(): Promise<void> {
    await waitFor(() => this.inflight === 0, { timeoutMs: 5000, intervalMs: 50, what: `${this.id} idle` }).catch(() => undefined);
    await new Promise<void>((r) => {
      this.server.close(() => r());
      this.server.closeIdleConnections();
      setTimeout(() => {
        this.server.closeAllConnections();
        r();
      }, 2000).unref();
    });
  }
}

// ------------------------------------------------------------------------------ registrars

const PREFIX = '/haproxy-discover';

/** One `haproxy-updater register` child per app instance, restarted if it exits on its own. */
class Registrar {
  proc: Proc | null = null;
  want = true;
  restarts = 0;
  failedStarts = 0;
  registeredAt = 0;
  leaseId: string | null = null;
  readonly pids: number[] = [];
  private registered: Promise<number>;
  private resolveRegistered!: (t: number) => void;
  private restartTimer: NodeJS.Timeout | null = null;

  constructor(
    readonly demo: Demo,
    readonly service: string,
    readonly domain: string,
    readonly app: App,
  ) {
    this.registered = new Promise((r) => (this.resolveRegistered = r));
  }

  get id(): string {
    return this.app.id;
  }

  get key(): string {
    return `${PREFIX}/http-services/${this.service}/upstreams/${this.id}`;
  }

  start(): void {
    const args = [
      BIN, 'register',
      '--etcd', this.demo.etcd.endpoint,
      '--service', this.service,
      '--domain', this.domain,
      '--addr', `127.0.0.1:${this.app.port}`,
      '--id', this.id,
      '--ttl', '5s',
    ];
    const proc = startProcess(process.execPath, args);
    this.proc = proc;
    this.pids.push(proc.pid);
    this.demo.pids.registrars.push(proc.pid);
    let buf = '';
    proc.child.stdout?.on('data', (chunk: Buffer) => {
      buf += chunk.toString('utf8');
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (!line.includes('upstream registered')) continue;
        try {
          const j = JSON.parse(line) as { time?: string; leaseId?: string };
          this.registeredAt = j.time ? Date.parse(j.time) : Date.now();
          this.leaseId = j.leaseId ?? null;
        } catch {
          this.registeredAt = Date.now();
        }
        this.failedStarts = 0;
        this.resolveRegistered(this.registeredAt);
      }
    });
    proc.child.once('exit', (code, signal) => {
      if (!this.want || this.demo.stopping || this.proc !== proc) return;
      const lost = proc.output.some((l) => l.includes('lease lost'));
      const why = lost ? 'its etcd lease was lost' : `exit ${code ?? signal}`;
      if (this.registeredAt) this.demo.event(`registrar of ${this.id} exited (${why}); restarting it`);
      if (this.registeredAt) {
        this.restarts++;
        this.demo.registrarRestarts++;
      } else this.failedStarts++;
      this.registeredAt = 0;
      this.registered = new Promise((r) => (this.resolveRegistered = r));
      // Bounded: at most 30 consecutive failed starts (etcd down), 1 s apart.
      if (this.failedStarts > 30) {
        this.demo.event(C.r(`registrar of ${this.id} keeps failing; giving up: ${proc.output.slice(-3).join(' | ')}`));
        return;
      }
      this.restartTimer = setTimeout(() => {
        this.restartTimer = null;
        if (this.want && !this.demo.stopping) this.start();
      }, 1000);
    });
  }

  /** Resolves with the time etcd accepted the registration (from the registrar's log). */
  async waitRegistered(timeoutMs = 20_000): Promise<number> {
    return Promise.race([this.registered, sleep(timeoutMs).then(() => Promise.reject(new Error(`${this.id}: not registered after ${timeoutMs} ms: ${this.proc?.output.slice(-5).join(' | ')}`)))]);
  }

  get alive(): boolean {
    return this.proc !== null && this.proc.child.exitCode === null && this.proc.child.signalCode === null;
  }

  /** SIGTERM: the registrar revokes its lease, so the key disappears now. */
  async stop(): Promise<void> {
    this.want = false;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    if (this.proc) await stopProcess(this.proc, 5000);
  }
}

// ------------------------------------------------------------------------------ traffic

interface HostStats {
  ok: number;
  failed: number;
  failures: Record<string, number>;
}

function request(port: number, host: string, pathName: string, timeoutMs = 10_000): Promise<{ ok: boolean; status: number; body: string; error?: string }> {
  return new Promise((resolve) => {
    const req = http.request({ host: '127.0.0.1', port, path: pathName, headers: { host, connection: 'close' }, agent: false, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ ok: res.statusCode === 200, status: res.statusCode ?? 0, body: body.trim() }));
      res.on('error', (err: NodeJS.ErrnoException) => resolve({ ok: false, status: 0, body: '', error: err.code ?? err.message }));
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })));
    req.on('error', (err: NodeJS.ErrnoException) => resolve({ ok: false, status: 0, body: '', error: err.code ?? err.message }));
    req.end();
  });
}

/**
 * Steady traffic through HAProxy, 127.0.0.1 only, a new connection per request: `workers`
 * loops each sending at most one request per `periodMs` (≤ 4 × 40 = 160 req/s), plus one
 * loop of slow requests (600 ms) so that drains have in-flight requests to finish. Bounded
 * by `deadline` and `maxRequests`.
 */
class Traffic {
  readonly hosts: string[] = [];
  readonly stats = new Map<string, HostStats>();
  sent = 0;
  private stopped = false;
  private loops: Promise<void>[] = [];

  constructor(
    readonly port: number,
    readonly deadline: number,
    readonly maxRequests: number,
  ) {}

  add(host: string): void {
    if (!this.hosts.includes(host)) this.hosts.push(host);
    if (!this.stats.has(host)) this.stats.set(host, { ok: 0, failed: 0, failures: {} });
  }

  start(): void {
    const workers = 4;
    const periodMs = 25;
    for (let w = 0; w < workers; w++) this.loops.push(this.loop(w, periodMs, () => '/'));
    this.loops.push(this.loop(0, 0, () => '/slow?ms=600', 'shop.localhost'));
  }

  private async loop(offset: number, periodMs: number, pathFor: () => string, onlyHost?: string): Promise<void> {
    let i = offset;
    while (!this.stopped && Date.now() < this.deadline && this.sent < this.maxRequests) {
      const host = onlyHost ?? this.hosts[i++ % this.hosts.length];
      if (!host) {
        await sleep(50);
        continue;
      }
      const started = Date.now();
      this.sent++;
      const r = await request(this.port, host, pathFor());
      const s = this.stats.get(host)!;
      if (r.ok) s.ok++;
      else {
        s.failed++;
        const k = r.error ?? String(r.status);
        s.failures[k] = (s.failures[k] ?? 0) + 1;
      }
      const wait = periodMs - (Date.now() - started);
      if (wait > 0) await sleep(wait);
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

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.loops);
  }
}

// ------------------------------------------------------------------------------ the demo

type Phase = 'setup' | 'membership' | 'structural';

interface Convergence {
  what: string;
  ms: number;
}

class Demo {
  etcd!: EtcdHandle;
  updater: UpdaterHandle | null = null;
  stateDir = '';
  statsPort = 0;
  statsPassword = randomBytes(12).toString('base64url');
  traffic: Traffic | null = null;
  readonly apps: App[] = [];
  readonly registrars: Registrar[] = [];
  stopping = false;
  aborted = false;
  readonly pids = { haproxy: new Set<number>(), etcd: [] as number[], updater: 0, registrars: [] as number[] };
  readonly reloads: Record<Phase, number> = { setup: 0, membership: 0, structural: 0 };
  readonly reloadNotes: string[] = [];
  phase: Phase = 'setup';
  step = 0;
  stepTitle = 'starting etcd, the updater and HAProxy';
  lastReloadCount = -1;
  masterPid = 0;
  runtimeCommands = 0;
  etcdState = '?';
  convergence: Convergence[] = [];
  upstreams = new Map<string, { up: number; drain: number; other: number }>();
  readonly events: string[] = [];
  /** Registrars that exited on their own (e.g. lease lost) and were started again. */
  registrarRestarts = 0;
  private reloadChain: Promise<void> = Promise.resolve();
  private pollTimer: NodeJS.Timeout | null = null;
  private lastPlain = 0;

  constructor(readonly o: Options) {}

  event(msg: string): void {
    this.events.push(msg);
    say(C.y(msg));
  }

  checkAbort(): void {
    if (this.aborted) throw new AbortError();
  }

  async pause(ms: number): Promise<void> {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      this.checkAbort();
      await sleep(Math.min(100, end - Date.now()));
    }
  }

  // ---- observation

  /** Reads HAProxy's reload counter; the increase counts for the phase current when the read started. Serialized. */
  syncReloads(): Promise<void> {
    const phase = this.phase;
    const label = `step ${this.step}`;
    this.reloadChain = this.reloadChain.then(async () => {
      if (!this.updater) return;
      const v = await masterView(this.updater.masterSocket).catch(() => null);
      if (!v) return;
      this.pids.haproxy.add(v.masterPid);
      for (const w of v.workers) this.pids.haproxy.add(w);
      if (this.masterPid && v.masterPid !== this.masterPid) this.event(`HAProxy master changed: ${this.masterPid} → ${v.masterPid}`);
      this.masterPid = v.masterPid;
      if (this.lastReloadCount < 0) {
        // Reloads before the first read happened while the stack started.
        this.reloads.setup += v.reloads;
      } else if (v.reloads > this.lastReloadCount) {
        const n = v.reloads - this.lastReloadCount;
        this.reloads[phase] += n;
        this.reloadNotes.push(`${n} during ${label} (${phase})`);
        say((phase === 'membership' ? C.r : C.y)(`HAProxy reloaded (${n}; show proc counter ${v.reloads}) during ${label}: ${phase === 'membership' ? 'a MEMBERSHIP phase (unexpected)' : phase === 'structural' ? 'structural change, expected' : 'set-up'}`));
      }
      this.lastReloadCount = v.reloads;
    });
    return this.reloadChain;
  }

  async readMetrics(): Promise<void> {
    if (!this.updater) return;
    const r = await this.updater.get('/metrics').catch(() => null);
    if (!r || r.status !== 200) return;
    let sum = 0;
    for (const m of r.body.matchAll(/^haproxy_updater_runtime_commands_total\{[^}]*\} ([0-9.e+]+)$/gm)) sum += Number(m[1]);
    this.runtimeCommands = sum;
    const st = /^haproxy_updater_etcd_connection_state\{state="([^"]+)"\} 1$/m.exec(r.body);
    if (st) this.etcdState = st[1]!;
  }

  /** Upstreams per service from HAProxy's Runtime API (`show servers state`). */
  async readUpstreams(): Promise<void> {
    if (!this.updater) return;
    const text = await socketCommand(this.updater.adminSocket, 'show servers state', 2000).catch(() => null);
    if (!text) return;
    const out = new Map<string, { up: number; drain: number; other: number }>();
    for (const line of text.split('\n')) {
      const f = line.trim().split(/\s+/);
      if (f.length < 7 || !/^\d+$/.test(f[0]!)) continue;
      const be = f[1]!;
      if (!be.startsWith('http-')) continue;
      const svc = be.slice(5);
      const addr = f[4]!;
      const op = Number(f[5]);
      const admin = Number(f[6]);
      const e = out.get(svc) ?? { up: 0, drain: 0, other: 0 };
      out.set(svc, e);
      if (admin & 0x63 || addr === '0.0.0.0') continue; // maint (FMAINT|IMAINT|RMAINT|HMAINT; CMAINT alone is not) or free slot
      if (admin & 0x18) e.drain++;
      else if (op === 2) e.up++;
      else e.other++;
    }
    this.upstreams = out;
  }

  startPolling(): void {
    let busy = false;
    const tick = async () => {
      if (busy) return;
      busy = true;
      try {
        await Promise.all([this.syncReloads(), this.readMetrics(), this.readUpstreams()]);
        if (TTY) drawTable();
        else if (Date.now() - this.lastPlain >= 2000) {
          this.lastPlain = Date.now();
          process.stdout.write(this.plainLine() + '\n');
        }
      } finally {
        busy = false;
      }
    };
    this.pollTimer = setInterval(() => void tick(), TTY ? 300 : 500);
    tableText = () => this.table();
  }

  stopPolling(): void {
    if (this.pollTimer) clearInterval(this.pollTimer);
    this.pollTimer = null;
    clearTable();
    tableText = null;
  }

  upstreamText(): string {
    const parts = [...this.upstreams.entries()].map(([svc, e]) => `${svc} ${e.up} up${e.drain ? ` +${e.drain} drain` : ''}${e.other ? ` +${e.other} starting` : ''}`);
    return parts.join(', ') || '-';
  }

  lastConvergence(): string {
    const c = this.convergence.at(-1);
    return c ? `${c.ms} ms (${c.what})` : '-';
  }

  table(): string[] {
    const t = this.traffic;
    const w = 64;
    const bar = C.dim('─'.repeat(w));
    const lines = [bar, `${C.b(`step ${this.step}/6`)} ${this.stepTitle}`.padEnd(w) + C.dim(`  t=${elapsed().trim()}s`)];
    lines.push(C.dim('host               ok        failed'));
    for (const [h, s] of t?.stats ?? []) {
      lines.push(`${h.padEnd(18)} ${String(s.ok).padEnd(9)} ${s.failed ? C.r(String(s.failed)) : C.g('0')}${s.failed ? C.dim(' ' + JSON.stringify(s.failures)) : ''}`);
    }
    const mr = this.reloads.membership;
    lines.push(
      `reloads (HAProxy show proc)  membership: ${mr ? C.r(String(mr)) : C.g('0')}  structural: ${this.reloads.structural}  set-up: ${this.reloads.setup}`,
      `runtime API commands         ${this.runtimeCommands}`,
      `etcd (updater's view)        ${this.etcdState === 'watching' ? C.g(this.etcdState) : C.y(this.etcdState)}`,
      `convergence, last change     ${this.lastConvergence()}`,
      `upstreams in HAProxy         ${this.upstreamText()}`,
      bar,
    );
    return lines;
  }

  plainLine(): string {
    const t = this.traffic;
    const hosts = [...(t?.stats ?? [])].map(([h, s]) => `${h.replace('.localhost', '')} ${s.ok}/${s.failed}`).join(' ');
    return `[${elapsed()}s] step ${this.step} | ok/failed ${hosts || '-'} | reloads membership ${this.reloads.membership} structural ${this.reloads.structural} | runtime cmds ${this.runtimeCommands} | etcd ${this.etcdState} | last convergence ${this.lastConvergence()} | upstreams ${this.upstreamText()}`;
  }

  async setStep(step: number, title: string, phase: Phase, note: string): Promise<void> {
    this.checkAbort();
    await this.syncReloads(); // what happened so far counts for the previous step
    this.step = step;
    this.stepTitle = title;
    this.phase = phase;
    caption(step, title, note);
  }

  // ---- stack

  async addInstance(service: string, domain: string, id: string): Promise<Registrar> {
    const app = await new App(id).listen();
    this.apps.push(app);
    const reg = new Registrar(this, service, domain, app);
    this.registrars.push(reg);
    reg.start();
    return reg;
  }

  /** Stops the registrar (the key goes), waits until HAProxy sends the app nothing more, then closes the app. */
  async removeInstance(reg: Registrar): Promise<void> {
    await reg.stop();
    const app = reg.app;
    app.mark();
    await waitFor(() => app.inflight === 0 && Date.now() - Math.max(app.lastHitAt, app.markAt) > 1000, { timeoutMs: 10_000, intervalMs: 50, what: `${app.id} drained` }).catch(() =>
      this.event(`${app.id} still received requests 10 s after deregistering`),
    );
    await app.close();
    this.registrars.splice(this.registrars.indexOf(reg), 1);
    this.apps.splice(this.apps.indexOf(app), 1);
  }

  /** Time from the registration in etcd to the first request the new instance answered. */
  async measureInstance(reg: Registrar, what: string): Promise<void> {
    const at = await reg.waitRegistered();
    await waitFor(() => reg.app.firstHitAt > 0, { timeoutMs: 20_000, intervalMs: 20, what: `${reg.id} receives traffic` });
    const ms = Math.max(0, reg.app.firstHitAt - at);
    this.convergence.push({ what, ms });
    say(`${reg.id} registered → first request answered by it after ${C.b(`${ms} ms`)}`);
  }

  /** Probes `host` (outside the counted traffic) until `pred(body)`; returns ms since `since`. */
  async probe(host: string, pred: (body: string) => boolean, since: number): Promise<number> {
    await waitFor(
      async () => {
        const r = await request(this.updater!.httpPort, host, '/', 2000);
        return r.ok && pred(r.body);
      },
      { timeoutMs: 20_000, intervalMs: 20, what: `${host} routed` },
    );
    return Date.now() - since;
  }

  async story(): Promise<void> {
    const o = this.o;
    // Dwell unit: the story's fixed work takes ~25 s; the rest of --duration is spread over the steps.
    const u = Math.min(8000, Math.max(400, ((o.durationS - 27) * 1000) / 8.5));
    const shop = (n: number) => `shop-${n}`;

    // (1) shop with 2 instances — registered before the updater started, so they are in HAProxy's first config.
    await this.setStep(1, 'service shop at shop.localhost, 2 instances', 'membership', 'two apps registered themselves with `haproxy-updater register`; traffic flows');
    await this.pause(2 * u);

    // (2) scale up to 5, then down to 2
    await this.setStep(2, 'scale shop 2 → 5 → 2', 'membership', 'new instances fill free server slots (4 declared), the 5th gets a dynamic server (add server): Runtime API, no reload');
    const added: Registrar[] = [];
    for (const n of [3, 4, 5]) {
      const reg = await this.addInstance('shop', 'shop.localhost', shop(n));
      added.push(reg);
      say(`started app ${reg.id} (127.0.0.1:${reg.app.port}) and its registrar`);
    }
    await Promise.all(added.map((r) => this.measureInstance(r, `scale up: ${r.id}`)));
    await this.pause(u);
    say('scaling down: SIGTERM to the registrars of shop-3..5 (they revoke their leases; HAProxy drains the servers)');
    await Promise.all(added.map((r) => this.removeInstance(r)));
    say(`shop back to ${this.registrars.filter((r) => r.service === 'shop').length} instances`);
    await this.pause(u);

    // (3) drain one upstream, then remove it
    await this.setStep(3, 'drain shop-2, then remove it', 'membership', 'state "drain" in its etcd value: no new requests, in-flight ones finish');
    const victim = this.registrars.find((r) => r.id === shop(2))!;
    const value = JSON.stringify({ addr: `127.0.0.1:${victim.app.port}`, state: 'drain' });
    const lease = victim.leaseId ? BigInt(victim.leaseId).toString(16) : null;
    // Keep the registrar's lease on the key, so stopping the registrar still removes it.
    const inflightAtPut = victim.app.inflight;
    victim.app.mark();
    await this.etcd.ctl('put', ...(lease ? [`--lease=${lease}`] : []), victim.key, value);
    say(`put ${victim.key} = ${value}`);
    await waitFor(() => victim.app.inflight === 0 && Date.now() - Math.max(victim.app.markAt, victim.app.lastHitAt) > 1500, { timeoutMs: 15_000, intervalMs: 50, what: 'drain took effect' });
    const lastNew = victim.app.lastHitAfterMarkAt ? `${victim.app.lastHitAfterMarkAt - victim.app.markAt} ms after the put` : 'none after the put';
    say(`drained: last new request to shop-2 ${lastNew}; ${victim.app.finishedAfterMark} of ${inflightAtPut} requests in flight at the put finished normally`);
    await this.pause(u / 2);
    say('removing shop-2 (registrar stopped: key deleted)');
    await this.removeInstance(victim);
    const repl = await this.addInstance('shop', 'shop.localhost', shop(6));
    say(`replacement ${repl.id} started (127.0.0.1:${repl.app.port})`);
    await this.measureInstance(repl, `replacement: ${repl.id}`);
    await this.pause(u);

    // (4) a new domain for shop
    await this.setStep(4, 'new domain store.localhost for shop', 'membership', 'hosts map updated over the Runtime API (add map) and the map file rewritten: no reload');
    const domainKey = `${PREFIX}/http-services/shop/domain`;
    const current = (await this.etcd.ctl('get', '--print-value-only', domainKey)).trim();
    const domains = [...new Set([...current.split(/[\s,]+/).filter(Boolean), 'store.localhost'])].join(',');
    const putAt = Date.now();
    await this.etcd.ctl('put', domainKey, domains);
    say(`put ${domainKey} = ${domains}`);
    const dms = await this.probe('store.localhost', (b) => b.startsWith('shop-'), putAt);
    this.convergence.push({ what: 'new domain store.localhost', ms: dms });
    say(`store.localhost routed to shop ${C.b(`${dms} ms`)} after the put; now part of the traffic`);
    this.traffic!.add('store.localhost');
    await this.pause(1.5 * u);

    // (5) a new service: structural, one reload
    await this.setStep(5, 'new service api at api.localhost', 'structural', 'a new backend is a STRUCTURAL change: render haproxy.cfg, validate, one guarded reload (expected)');
    const api1 = await this.addInstance('api', 'api.localhost', 'api-1');
    const apiAt = await api1.waitRegistered();
    const ams = await this.probe('api.localhost', (b) => b === 'api-1', apiAt);
    this.convergence.push({ what: 'new service api (reload)', ms: ams });
    say(`api.localhost answered by api-1 ${C.b(`${ams} ms`)} after its registration; now part of the traffic`);
    this.traffic!.add('api.localhost');
    // Let the reload(s) of this step be read before the next step starts.
    await this.pause(Math.max(1500, u));
    await this.syncReloads();

    // (6) etcd outage
    await this.setStep(6, 'etcd killed, HAProxy keeps serving', 'membership', 'the updater keeps the last good state (stale, never empty); changes after etcd returns are applied');
    const etcdPid = this.etcd.proc.pid;
    await this.etcd.kill();
    say(`etcd (pid ${etcdPid}) killed with SIGKILL`);
    await waitFor(async () => (await this.readMetrics(), this.etcdState !== 'watching'), { timeoutMs: 15_000, intervalMs: 100, what: 'updater notices the outage' }).catch(() => undefined);
    say(`updater's etcd state: ${this.etcdState}; traffic continues`);
    await this.pause(o.outageMs ?? (o.short ? 3000 : 6000));
    await this.etcd.start();
    this.pids.etcd.push(this.etcd.proc.pid);
    say(`etcd restarted (pid ${this.etcd.proc.pid}, same data dir)`);
    await waitFor(async () => (await this.readMetrics(), this.etcdState === 'watching'), { timeoutMs: 30_000, intervalMs: 100, what: 'updater reconnects to etcd' });
    say(`updater's etcd state: ${this.etcdState}`);
    const api2 = await this.addInstance('api', 'api.localhost', 'api-2');
    say(`scaling api up by one after the outage: ${api2.id} (127.0.0.1:${api2.app.port})`);
    await this.measureInstance(api2, `after etcd restart: ${api2.id}`);
    // Registrars that lost their lease during the outage were restarted; wait until all are registered again.
    await waitFor(() => this.registrars.every((r) => r.alive && r.registeredAt > 0), { timeoutMs: 20_000, intervalMs: 100, what: 'all registrars registered' }).catch(() =>
      this.event('not every registrar is registered again 20 s after the outage'),
    );
    const restarted = this.registrarRestarts;
    say(restarted ? `${restarted} registrar(s) exited during the outage (lease lost) and were restarted` : 'every registrar kept its lease through the outage');
  }

  async run(): Promise<number> {
    const o = this.o;
    let storyError: unknown = null;
    try {
      say(C.b('haproxy-updater demo') + C.dim(` (${o.short ? 'short, ' : ''}~${o.durationS} s of traffic${o.keep ? ', --keep' : ''}; Ctrl-C ends early)`));
      this.etcd = await startEtcd();
      this.pids.etcd.push(this.etcd.proc.pid);
      say(`etcd ${this.etcd.endpoint} (pid ${this.etcd.proc.pid})`);
      this.checkAbort();
      // Step 1's instances register before the updater starts: HAProxy's first config has shop.
      const first = [await this.addInstance('shop', 'shop.localhost', 'shop-1'), await this.addInstance('shop', 'shop.localhost', 'shop-2')];
      await Promise.all(first.map((r) => r.waitRegistered()));
      say('shop-1 and shop-2 registered themselves (shop.localhost)');
      this.checkAbort();
      this.stateDir = await tempDir('hu-demo-');
      this.statsPort = await freePort();
      this.updater = await startUpdater({
        etcdEndpoint: this.etcd.endpoint,
        stateDir: this.stateDir,
        extraArgs: ['--stats-port', String(this.statsPort), '--log-level', 'warn'],
        env: { HAPROXY_UPDATER_STATS_PASSWORD: this.statsPassword },
      });
      this.pids.updater = this.updater.proc.pid;
      await this.syncReloads();
      say(`updater (pid ${this.updater.proc.pid}) started HAProxy (master pid ${this.masterPid}): http://127.0.0.1:${this.updater.httpPort}/`);
      await waitFor(async () => (await request(this.updater!.httpPort, 'shop.localhost', '/', 2000)).ok, { timeoutMs: 20_000, intervalMs: 50, what: 'shop routed' });
      const deadline = Date.now() + o.durationS * 1000;
      this.traffic = new Traffic(this.updater.httpPort, deadline + 120_000, Math.ceil(200 * (o.durationS + 120)));
      this.traffic.add('shop.localhost');
      this.traffic.start();
      this.startPolling();
      try {
        await this.story();
        await this.syncReloads();
        if (Date.now() < deadline) {
          await this.setStep(this.step, 'steady traffic until the end', 'membership', `${Math.round((deadline - Date.now()) / 1000)} s more of traffic on the final state`);
          while (Date.now() < deadline) await this.pause(Math.min(500, deadline - Date.now()));
        }
      } catch (err) {
        if (!(err instanceof AbortError)) storyError = err;
      }
      await this.traffic.stop();
      await sleep(300);
      await this.syncReloads();
      await this.readMetrics();
      await this.readUpstreams();
      this.stopPolling();
      if (storyError) {
        say(C.r(`story failed: ${(storyError as Error).stack ?? String(storyError)}`));
        say(C.dim(`updater output (last lines):\n${this.updater.proc.output.slice(-15).join('\n')}`));
      }
      if (!this.aborted) {
        const status = await execFileP(process.execPath, [BIN, 'status', '--etcd', this.etcd.endpoint, '--state-dir', this.stateDir], { timeout: 20_000 }).catch((e: Error) => ({ stdout: `(status failed: ${e.message})` }));
        say(`\`haproxy-updater status\`:\n${status.stdout.trimEnd()}`);
      }
      if (o.keep && !this.aborted) await this.keep();
    } catch (err) {
      if (!(err instanceof AbortError)) storyError = err;
      if (storyError) say(C.r(`demo failed: ${(storyError as Error).stack ?? String(storyError)}`));
      this.stopPolling();
    }
    await this.traffic?.stop();
    await this.cleanup();
    return this.summary(storyError);
  }

  async keep(): Promise<void> {
    const u = this.updater!;
    const lines = [
      '',
      C.b('--keep: the stack keeps running. Explore it:'),
      `  curl -H 'Host: shop.localhost' http://127.0.0.1:${u.httpPort}/       (also store.localhost, api.localhost)`,
      `  stats page   http://127.0.0.1:${this.statsPort}/admin?stats   user admin   password ${this.statsPassword}`,
      `  metrics      http://127.0.0.1:${u.listenPort}/metrics   (HAProxy's own: http://127.0.0.1:${this.statsPort}/metrics)`,
      `  etcd         ETCDCTL_API=3 etcdctl --endpoints ${this.etcd.endpoint} get --prefix ${PREFIX}`,
      `  state dir    ${this.stateDir}`,
      `  status       node ${path.relative(process.cwd(), BIN)} status --etcd ${this.etcd.endpoint} --state-dir ${this.stateDir}`,
      `  plan         node ${path.relative(process.cwd(), BIN)} plan --etcd ${this.etcd.endpoint} --state-dir ${this.stateDir} --http-port ${u.httpPort} --https-port ${u.httpsPort}`,
      `  register     node ${path.relative(process.cwd(), BIN)} register --etcd ${this.etcd.endpoint} --service shop --domain shop.localhost --addr 127.0.0.1:<port> --id mine --ttl 5s`,
      `  runtime API  echo 'show servers state' | socat stdio unix-connect:${u.adminSocket}`,
      `  PIDs         demo ${process.pid}, updater ${u.proc.pid}, haproxy master ${this.masterPid}, etcd ${this.etcd.proc.pid}, registrars ${this.registrars.map((r) => r.proc?.pid).join(',')}`,
      `  stop         Ctrl-C here (or kill -INT ${process.pid}); everything is cleaned up. Ends by itself after ${this.o.keepMaxS / 60} min.`,
      '',
    ];
    process.stdout.write(lines.join('\n') + '\n');
    const end = Date.now() + this.o.keepMaxS * 1000;
    while (!this.aborted && Date.now() < end) await sleep(200);
  }

  async cleanup(): Promise<void> {
    this.stopping = true;
    say('cleaning up: registrars, updater (stops HAProxy), etcd, apps, temp dir');
    for (const r of this.registrars) r.want = false;
    // Registrars first, while etcd is up: they revoke their leases.
    await Promise.all(this.registrars.map((r) => r.stop().catch(() => undefined)));
    if (this.updater) {
      const view = await masterView(this.updater.masterSocket).catch(() => null);
      if (view) for (const p of [view.masterPid, ...view.workers]) this.pids.haproxy.add(p);
      await this.updater.stop().catch(() => undefined);
      // Last resort: HAProxy by PID.
      await killHaproxy(this.updater.masterSocket).catch(() => undefined);
      for (const pid of this.pids.haproxy) if (isProcess(pid, 'haproxy')) safeKill(pid);
    }
    await this.etcd?.destroy().catch(() => undefined);
    await Promise.all(this.apps.map((a) => a.close().catch(() => undefined)));
    if (this.stateDir) await removeDir(this.stateDir).catch(() => undefined);
    await sleep(200);
  }

  summary(error: unknown): number {
    const t = this.traffic;
    const ok = t?.ok ?? 0;
    const failed = t?.failed ?? 0;
    const convMs = this.convergence.map((c) => c.ms);
    const p50 = Math.round(percentile(convMs, 50));
    const max = convMs.length ? Math.max(...convMs) : 0;
    const allPids = {
      haproxy: [...this.pids.haproxy],
      etcd: this.pids.etcd,
      updater: this.pids.updater,
      registrars: this.pids.registrars,
    };
    const leftover = [
      ...allPids.haproxy.filter((p) => isProcess(p, 'haproxy')),
      ...allPids.etcd.filter((p) => isProcess(p, 'etcd')),
      ...[allPids.updater, ...allPids.registrars].filter((p) => p && isProcess(p, 'node')),
    ];
    const registrarRestarts = this.registrarRestarts;
    const pass = failed === 0 && this.reloads.membership === 0 && !error && ok > 0;
    const statsUrl = `http://127.0.0.1:${this.statsPort}/admin?stats`;
    const perHost = Object.fromEntries([...(t?.stats ?? [])].map(([h, s]) => [h, { ok: s.ok, failed: s.failed }]));
    const lines = [
      '',
      C.b('== haproxy-updater demo: summary =='),
      `story             ${this.step}/6 steps${this.aborted ? ' (stopped early by Ctrl-C)' : ''}${error ? C.r(' (failed: ' + ((error as Error).message ?? String(error)) + ')') : ''}, ${elapsed().trim()} s`,
      `requests          ok ${ok}, failed ${failed ? C.r(String(failed)) : C.g('0')}${failed ? ' ' + JSON.stringify(t?.failures) : ''}   (${Object.entries(perHost).map(([h, s]) => `${h} ${s.ok}/${s.failed}`).join(', ')})`,
      `reloads           during membership changes: ${this.reloads.membership ? C.r(String(this.reloads.membership)) : C.g('0')}   structural changes: ${this.reloads.structural}   set-up: ${this.reloads.setup}   (HAProxy master's own counter, show proc)`,
      `runtime commands  ${this.runtimeCommands}   (sum of haproxy_updater_runtime_commands_total)`,
      `convergence       p50 ${p50} ms, max ${max} ms over ${convMs.length} changes (etcd put → first request answered by the new route)`,
      ...this.convergence.map((c) => C.dim(`                    ${String(c.ms).padStart(5)} ms  ${c.what}`)),
      `registrars        ${registrarRestarts ? `${registrarRestarts} restarted after exiting on their own (lease lost while etcd was down)` : 'none had to be restarted'}`,
      `stats page        ${statsUrl}   user admin   password ${this.statsPassword}${this.o.keep ? '' : '   (stack stopped now; --keep leaves it running)'}`,
      `processes         all stopped${leftover.length ? C.r(`, EXCEPT ${leftover.join(',')}`) : ''}; temp dirs removed`,
      `result            ${pass ? C.g('PASS') : C.r('FAIL')}: ${failed} failed requests, ${this.reloads.membership} reloads for membership changes`,
    ];
    process.stdout.write(lines.join('\n') + '\n');
    const json = {
      ok,
      failed,
      failures: t?.failures ?? {},
      perHost,
      membershipReloads: this.reloads.membership,
      structuralReloads: this.reloads.structural,
      setupReloads: this.reloads.setup,
      runtimeCommands: this.runtimeCommands,
      convergenceP50Ms: p50,
      convergenceMaxMs: max,
      convergence: this.convergence,
      registrarRestarts,
      steps: this.step,
      aborted: this.aborted,
      error: error ? String((error as Error).message ?? error) : null,
      statsUrl,
      statsUser: 'admin',
      statsPassword: this.statsPassword,
      pids: allPids,
      leftover,
      pass,
    };
    process.stdout.write(`DEMO-SUMMARY ${JSON.stringify(json)}\n`);
    return pass ? 0 : 1;
  }
}

class AbortError extends Error {
  constructor() {
    super('aborted');
  }
}

/** True when `pid` runs and its command name starts with `name` (guards against PID reuse). */
function isProcess(pid: number, name: string): boolean {
  try {
    const comm = readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return comm.startsWith(name) && state !== 'Z';
  } catch {
    return false;
  }
}

function safeKill(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    /* gone */
  }
}

// ------------------------------------------------------------------------------ main

async function main(): Promise<number> {
  let o: Options;
  try {
    o = parseOptions(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`demo: ${(err as Error).message}\n`);
    return 2;
  }
  const demo = new Demo(o);
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    signals++;
    if (signals === 1) {
      demo.aborted = true;
      say(C.y(`${sig}: stopping the story and cleaning up (again to force)`));
    } else {
      // The harness kills every process it started when this process exits.
      process.exit(130);
    }
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  // Hard bound on the whole run (story + clean-up), in case something hangs.
  const hardMs = (o.durationS + 180) * 1000 + (o.keep ? o.keepMaxS * 1000 : 0);
  const hard = setTimeout(() => {
    process.stderr.write(`demo: still running after ${Math.round(hardMs / 1000)} s; giving up\n`);
    process.exit(1);
  }, hardMs);
  hard.unref();
  const code = await demo.run();
  clearTimeout(hard);
  return code;
}

process.exit(await main());
