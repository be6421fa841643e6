/**
 * The demo's stack and its measurements: etcd, the self-registering app instances, the
 * updater with its managed HAProxy, the traffic; HAProxy's own reload counter (`show proc`)
 * and upstream states (`show servers state`), both read through `src/runtime`'s parsers;
 * the clean-up (every process by PID) and the summary. An abort (Ctrl-C) stops the traffic
 * first, ends every wait at once and takes the fast clean-up path.
 */
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import {
  BIN,
  execFileP,
  freePort,
  httpRequest,
  isProcess,
  killHaproxy,
  masterView,
  percentile,
  readServers,
  removeDir,
  signalPid,
  sleep,
  slotUse,
  startEtcd,
  startUpdater,
  stopAllProcesses,
  stopProcess,
  tempDir,
  toolVersions,
  versionsLine,
  waitFor,
  type EtcdHandle,
  type ToolVersion,
  type UpdaterHandle,
} from '../../testkit/index.js';
import type { Options } from './options.js';
import { App, PREFIX, Registrar, type RegistrarHost } from './registrars.js';
import { C, TTY, caption, drawTable, elapsed, print, say, setTable, statusLine, statusTable, type StatusView, type UpstreamCount } from './screen.js';
import { story } from './story.js';
import { Traffic } from './traffic.js';

type Phase = 'setup' | 'membership' | 'structural';

interface Convergence {
  what: string;
  ms: number;
}

/** Thrown into every wait when the demo is aborted; never printed. */
class AbortedError extends Error {
  constructor(readonly signalName: string) {
    super(`aborted by ${signalName}`);
    this.name = 'AbortedError';
  }
}

export class Demo implements RegistrarHost {
  etcd!: EtcdHandle;
  updater: UpdaterHandle | null = null;
  stateDir = '';
  statsPort = 0;
  statsPassword = randomBytes(12).toString('base64url');
  traffic: Traffic | null = null;
  readonly apps: App[] = [];
  readonly registrars: Registrar[] = [];
  stopping = false;
  /** The signal that aborted the demo, or null. */
  abortedBy: string | null = null;
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
  upstreams = new Map<string, UpstreamCount>();
  readonly events: string[] = [];
  /** Registrars that exited on their own (e.g. lease lost) and were started again. */
  registrarRestarts = 0;
  versions: ToolVersion[] = [];
  readonly #abort = new AbortController();
  #reloadChain: Promise<void> = Promise.resolve();
  #pollTimer: NodeJS.Timeout | null = null;
  #lastPlain = 0;

  constructor(readonly o: Options) {}

  get aborted(): boolean {
    return this.abortedBy !== null;
  }

  /** Aborts every wait of the story and the set-up. */
  get signal(): AbortSignal {
    return this.#abort.signal;
  }

  /** Ctrl-C: traffic stops first, then every wait ends; `run` goes on to the fast clean-up. */
  abort(signalName: string): void {
    if (this.aborted) return;
    this.abortedBy = signalName;
    this.stopping = true;
    void this.traffic?.stop();
    this.#abort.abort(new AbortedError(signalName));
  }

  // ---- RegistrarHost

  get etcdEndpoint(): string {
    return this.etcd.endpoint;
  }

  event(msg: string): void {
    this.events.push(msg);
    say(C.y(msg));
  }

  registrarStarted(pid: number): void {
    this.pids.registrars.push(pid);
  }

  registrarRestarted(): void {
    this.registrarRestarts++;
  }

  checkAbort(): void {
    this.signal.throwIfAborted();
  }

  /** Sleeps `ms`; throws at once when aborted. */
  async pause(ms: number): Promise<void> {
    await sleep(Math.max(0, ms), this.signal);
  }

  // ---- observation

  /** Reads HAProxy's reload counter; the increase counts for the phase current when the read started. Serialized. */
  syncReloads(): Promise<void> {
    const phase = this.phase;
    const label = `step ${this.step}`;
    this.#reloadChain = this.#reloadChain.then(async () => {
      if (!this.updater) return;
      const v = await masterView(this.updater.masterSocket).catch(() => null);
      if (!v) return;
      for (const pid of [v.masterPid, ...v.workers, ...v.oldWorkers]) this.pids.haproxy.add(pid);
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
    return this.#reloadChain;
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

  /** Upstreams per service from HAProxy's Runtime API (`show servers state`, flags read by src/runtime). */
  async readUpstreams(): Promise<void> {
    if (!this.updater) return;
    const rows = await readServers(this.updater.adminSocket, 2000).catch(() => null);
    if (!rows) return;
    const out = new Map<string, UpstreamCount>();
    for (const row of rows) {
      if (!row.beName.startsWith('http-')) continue;
      const e = out.get(row.beName.slice(5)) ?? { up: 0, drain: 0, other: 0 };
      out.set(row.beName.slice(5), e);
      const use = slotUse(row);
      if (use === 'up') e.up++;
      else if (use === 'drain') e.drain++;
      else if (use === 'down') e.other++;
    }
    this.upstreams = out;
  }

  view(): StatusView {
    const c = this.convergence.at(-1);
    return {
      step: this.step,
      stepTitle: this.stepTitle,
      hosts: this.traffic?.stats ?? new Map(),
      reloads: this.reloads,
      runtimeCommands: this.runtimeCommands,
      etcdState: this.etcdState,
      lastConvergence: c ? `${c.ms} ms (${c.what})` : '-',
      upstreams: this.upstreams,
    };
  }

  startPolling(): void {
    let busy = false;
    const tick = async () => {
      if (busy || this.stopping) return;
      busy = true;
      try {
        await Promise.all([this.syncReloads(), this.readMetrics(), this.readUpstreams()]);
        if (this.stopping) return;
        if (TTY) drawTable();
        else if (Date.now() - this.#lastPlain >= 2000) {
          this.#lastPlain = Date.now();
          process.stdout.write(statusLine(this.view()) + '\n');
        }
      } finally {
        busy = false;
      }
    };
    this.#pollTimer = setInterval(() => void tick(), TTY ? 300 : 500);
    setTable(() => statusTable(this.view()));
  }

  stopPolling(): void {
    if (this.#pollTimer) clearInterval(this.#pollTimer);
    this.#pollTimer = null;
    setTable(null);
  }

  async setStep(step: number, title: string, phase: Phase, note: string): Promise<void> {
    this.checkAbort();
    await this.syncReloads(); // what happened so far counts for the previous step
    this.step = step;
    this.stepTitle = title;
    this.phase = phase;
    caption(step, title, note);
  }

  // ---- instances

  async addInstance(service: string, domain: string, id: string): Promise<Registrar> {
    this.checkAbort();
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
    await waitFor(() => app.inflight === 0 && Date.now() - Math.max(app.lastHitAt, app.markAt) > 1000, { timeoutMs: 10_000, intervalMs: 50, what: `${app.id} drained`, signal: this.signal }).catch(
      () => {
        this.checkAbort();
        this.event(`${app.id} still received requests 10 s after deregistering`);
      },
    );
    await app.close();
    this.registrars.splice(this.registrars.indexOf(reg), 1);
    this.apps.splice(this.apps.indexOf(app), 1);
  }

  /** Time from the registration in etcd to the first request the new instance answered. */
  async measureInstance(reg: Registrar, what: string): Promise<void> {
    const at = await reg.waitRegistered(20_000, this.signal);
    await waitFor(() => reg.app.firstHitAt > 0, { timeoutMs: 20_000, intervalMs: 20, what: `${reg.id} receives traffic`, signal: this.signal });
    const ms = Math.max(0, reg.app.firstHitAt - at);
    this.convergence.push({ what, ms });
    say(`${reg.id} registered → first request answered by it after ${C.b(`${ms} ms`)}`);
  }

  /** One request outside the counted traffic. */
  request(host: string, timeoutMs = 2000) {
    return httpRequest({ port: this.updater!.httpPort, host, timeoutMs, signal: this.signal });
  }

  /** Probes `host` (outside the counted traffic) until `pred(body)`; returns ms since `since`. */
  async probe(host: string, pred: (body: string) => boolean, since: number): Promise<number> {
    await waitFor(
      async () => {
        const r = await this.request(host);
        return r.ok && pred(r.body);
      },
      { timeoutMs: 20_000, intervalMs: 20, what: `${host} routed`, signal: this.signal },
    );
    return Date.now() - since;
  }

  // ---- the run

  /** etcd, the first two instances (registered before the updater starts: HAProxy's first config has shop), the updater, traffic. */
  async startStack(): Promise<void> {
    const o = this.o;
    this.versions = await toolVersions();
    say(C.b('haproxy-updater demo') + C.dim(` (${o.short ? 'short, ' : ''}~${o.durationS} s of traffic${o.keep ? ', --keep' : ''}; Ctrl-C ends early)`));
    say(C.dim(`using ${versionsLine(this.versions)}`));
    this.etcd = await startEtcd();
    this.pids.etcd.push(this.etcd.proc.pid);
    say(`etcd ${this.etcd.endpoint} (pid ${this.etcd.proc.pid})`);
    const first = [await this.addInstance('shop', 'shop.localhost', 'shop-1'), await this.addInstance('shop', 'shop.localhost', 'shop-2')];
    await Promise.all(first.map((r) => r.waitRegistered(20_000, this.signal)));
    say('shop-1 and shop-2 registered themselves (shop.localhost)');
    this.checkAbort();
    this.stateDir = await tempDir('hu-demo-');
    this.statsPort = await freePort();
    this.checkAbort();
    this.updater = await startUpdater({
      etcdEndpoint: this.etcd.endpoint,
      stateDir: this.stateDir,
      extraArgs: ['--stats-port', String(this.statsPort), '--log-level', 'warn'],
      env: { HAPROXY_UPDATER_STATS_PASSWORD: this.statsPassword },
    });
    this.pids.updater = this.updater.proc.pid;
    await this.syncReloads();
    say(`updater (pid ${this.updater.proc.pid}) started HAProxy (master pid ${this.masterPid}): http://127.0.0.1:${this.updater.httpPort}/`);
    await waitFor(async () => (await this.request('shop.localhost')).ok, { timeoutMs: 20_000, intervalMs: 50, what: 'shop routed', signal: this.signal });
  }

  /** Set-up, story, steady traffic, final reads, `status`, --keep. Resolves with the story's error (null when it played through). */
  async play(): Promise<unknown> {
    const o = this.o;
    await this.startStack();
    const deadline = Date.now() + o.durationS * 1000;
    this.traffic = new Traffic(this.updater!.httpPort, deadline + 120_000, Math.ceil(200 * (o.durationS + 120)), 'shop.localhost');
    this.traffic.add('shop.localhost');
    this.checkAbort();
    this.traffic.start();
    this.startPolling();
    let storyError: unknown = null;
    try {
      await story(this);
      await this.syncReloads();
      if (Date.now() < deadline) {
        await this.setStep(this.step, 'steady traffic until the end', 'membership', `${Math.round((deadline - Date.now()) / 1000)} s more of traffic on the final state`);
        await this.pause(deadline - Date.now());
      }
    } catch (err) {
      if (this.aborted) throw err;
      storyError = err;
    }
    await this.traffic.stop();
    await this.pause(300);
    await this.syncReloads();
    await this.readMetrics();
    await this.readUpstreams();
    this.stopPolling();
    if (storyError) {
      say(C.r(`story failed: ${(storyError as Error).stack ?? String(storyError)}`));
      say(C.dim(`updater output (last lines):\n${this.updater!.proc.output.slice(-15).join('\n')}`));
    }
    const status = await execFileP(process.execPath, [BIN, 'status', '--etcd', this.etcd.endpoint, '--state-dir', this.stateDir], { timeout: 20_000, signal: this.signal }).catch((e: Error) => ({
      stdout: `(status failed: ${e.message})`,
    }));
    this.checkAbort();
    say(`\`haproxy-updater status\`:\n${status.stdout.trimEnd()}`);
    if (o.keep) await this.keep();
    return storyError;
  }

  /** Plays the demo, cleans up and prints the summary; the exit code (130 when aborted). */
  async run(): Promise<number> {
    const aborted = new Promise<null>((r) => this.signal.addEventListener('abort', () => r(null), { once: true }));
    // On abort the race ends at once; whatever `play` still awaits fails on its own later and is ignored.
    const played = this.play().then(
      (storyError) => storyError,
      (err: unknown) => {
        if (this.aborted) return null;
        say(C.r(`demo failed: ${(err as Error).stack ?? String(err)}`));
        return err;
      },
    );
    const error = await Promise.race([played, aborted]);
    if (this.aborted) say(C.y(`${this.abortedBy}: aborted; traffic stopped, stopping every process the demo started`));
    await this.traffic?.stop();
    this.stopPolling();
    await this.cleanup();
    const pass = this.summary(error);
    return this.aborted ? 130 : pass ? 0 : 1;
  }

  async keep(): Promise<void> {
    const u = this.updater!;
    const cli = path.relative(process.cwd(), BIN);
    print([
      '',
      C.b('--keep: the stack keeps running. Explore it:'),
      `  curl -H 'Host: shop.localhost' http://127.0.0.1:${u.httpPort}/       (also store.localhost, api.localhost)`,
      `  stats page   http://127.0.0.1:${this.statsPort}/admin?stats   user admin   password ${this.statsPassword}`,
      `  metrics      http://127.0.0.1:${u.listenPort}/metrics   (HAProxy's own: http://127.0.0.1:${this.statsPort}/metrics)`,
      `  etcd         ETCDCTL_API=3 etcdctl --endpoints ${this.etcd.endpoint} get --prefix ${PREFIX}`,
      `  state dir    ${this.stateDir}`,
      `  status       node ${cli} status --etcd ${this.etcd.endpoint} --state-dir ${this.stateDir}`,
      `  plan         node ${cli} plan --etcd ${this.etcd.endpoint} --state-dir ${this.stateDir} --http-port ${u.httpPort} --https-port ${u.httpsPort}`,
      `  register     node ${cli} register --etcd ${this.etcd.endpoint} --service shop --domain shop.localhost --addr 127.0.0.1:<port> --id mine --ttl 5s`,
      `  runtime API  echo 'show servers state' | socat stdio unix-connect:${u.adminSocket}`,
      `  PIDs         demo ${process.pid}, updater ${u.proc.pid}, haproxy master ${this.masterPid}, etcd ${this.etcd.proc.pid}, registrars ${this.registrars.map((r) => r.proc?.pid).join(',')}`,
      `  stop         Ctrl-C here (or kill -INT ${process.pid}); everything is cleaned up. Ends by itself after ${this.o.keepMaxS / 60} min.`,
      '',
    ]);
    await this.pause(this.o.keepMaxS * 1000).catch(() => undefined);
  }

  /**
   * Stops every process by PID: registrars first while etcd is up (they revoke their
   * leases), the updater (it stops HAProxy), HAProxy's own PIDs as a last resort, etcd, then
   * anything still starting. Aborted: all at once with short grace periods, to end within 3 s.
   */
  async cleanup(): Promise<void> {
    this.stopping = true;
    const fast = this.aborted;
    if (!fast) say('cleaning up: registrars, updater (stops HAProxy), etcd, apps, temp dir');
    for (const r of this.registrars) r.want = false;
    const registrars = Promise.all(this.registrars.map((r) => r.stop(fast ? 1000 : 5000).catch(() => undefined)));
    if (!fast) await registrars;
    const masterSocket = this.stateDir ? path.join(this.stateDir, 'master.sock') : null;
    if (masterSocket) {
      const view = await masterView(masterSocket).catch(() => null);
      if (view) for (const p of [view.masterPid, ...view.workers, ...view.oldWorkers]) this.pids.haproxy.add(p);
    }
    await this.updater?.stop(fast ? 1500 : 10_000).catch(() => undefined);
    await registrars;
    // An updater still starting, a registrar being restarted: tracked by testkit, stopped by PID.
    await stopAllProcesses(fast ? 500 : 3000);
    if (masterSocket) await killHaproxy(masterSocket).catch(() => undefined);
    for (const pid of this.pids.haproxy) if (isProcess(pid, 'haproxy')) signalPid(pid, 'SIGKILL');
    if (this.etcd) {
      await stopProcess(this.etcd.proc, fast ? 500 : 3000);
      await removeDir(this.etcd.dataDir).catch(() => undefined);
    }
    await Promise.all(this.apps.map((a) => a.close(fast ? 0 : 5000).catch(() => undefined)));
    if (this.stateDir) await removeDir(this.stateDir).catch(() => undefined);
    if (!fast) await sleep(200);
  }

  /** Prints the summary and the machine-readable `DEMO-SUMMARY {json}` line; true when the demo passed. */
  summary(error: unknown): boolean {
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
    const pass = !this.aborted && failed === 0 && this.reloads.membership === 0 && !error && ok > 0;
    const statsUrl = `http://127.0.0.1:${this.statsPort}/admin?stats`;
    const perHost = Object.fromEntries([...(t?.stats ?? [])].map(([h, s]) => [h, { ok: s.ok, failed: s.failed }]));
    const lines = [
      '',
      C.b('== haproxy-updater demo: summary =='),
      `story             ${this.step}/6 steps${this.aborted ? C.y(` (aborted by ${this.abortedBy}; figures are what was measured until then)`) : ''}${error ? C.r(' (failed: ' + ((error as Error).message ?? String(error)) + ')') : ''}, ${elapsed().trim()} s`,
      `requests          ok ${ok}, failed ${failed ? C.r(String(failed)) : C.g('0')}${failed ? ' ' + JSON.stringify(t?.failures) : ''}   (${Object.entries(perHost).map(([h, s]) => `${h} ${s.ok}/${s.failed}`).join(', ')})`,
      `reloads           during membership changes: ${this.reloads.membership ? C.r(String(this.reloads.membership)) : C.g('0')}   structural changes: ${this.reloads.structural}   set-up: ${this.reloads.setup}   (HAProxy master's own counter, show proc)`,
      `runtime commands  ${this.runtimeCommands}   (sum of haproxy_updater_runtime_commands_total)`,
      `convergence       p50 ${p50} ms, max ${max} ms over ${convMs.length} changes (etcd put → first request answered by the new route)`,
      ...this.convergence.map((c) => C.dim(`                    ${String(c.ms).padStart(5)} ms  ${c.what}`)),
      `registrars        ${registrarRestarts ? `${registrarRestarts} restarted after exiting on their own (lease lost while etcd was down)` : 'none had to be restarted'}`,
      `stats page        ${statsUrl}   user admin   password ${this.statsPassword}${this.o.keep ? '' : '   (stack stopped now; --keep leaves it running)'}`,
      `processes         all stopped${leftover.length ? C.r(`, EXCEPT ${leftover.join(',')}`) : ''}; temp dirs removed`,
      `versions          ${versionsLine(this.versions)}`,
      `result            ${this.aborted ? C.y('ABORTED') : pass ? C.g('PASS') : C.r('FAIL')}: ${failed} failed requests, ${this.reloads.membership} reloads for membership changes${this.aborted ? ' so far' : ''}`,
    ];
    print(lines);
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
      abortedBy: this.abortedBy,
      versions: this.versions,
      error: error ? String((error as Error).message ?? error) : null,
      statsUrl,
      statsUser: 'admin',
      statsPassword: this.statsPassword,
      pids: allPids,
      leftover,
      pass,
    };
    process.stdout.write(`DEMO-SUMMARY ${JSON.stringify(json)}\n`);
    return pass;
  }
}
