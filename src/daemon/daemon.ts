/**
 * The daemon: one-way flow. The watcher turns etcd into a typed Registry and only ever
 * requests a pass; a single queue (concurrency 1) runs passes, each of which observes
 * HAProxy, plans (pure), decides about a reload (pure, reconcile/decide.ts) and executes:
 * a render + validated + guarded reload when decided, then the runtime operations in one
 * batch. Nothing else talks to HAProxy, so nothing races.
 */
import { mkdir, readFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import path from 'node:path';
import PQueue from 'p-queue';
import { logger } from '../log.js';
import { backoffDelay } from '../backoff.js';
import { Metrics } from '../metrics.js';
import { EMPTY_REGISTRY, type Registry, type Rejection } from '../model.js';
import { ConfigInvalidError, ReloadFailedError, ReloadTimeoutError, UpdaterError } from '../errors.js';
import { RegistryWatcher, type RegistryUpdate } from '../watch/index.js';
import { RuntimeClient, MasterClient, VersionTracker, localCheckFirst, servingWorkers, type SocketTarget } from '../runtime/index.js';
import {
  plan as makePlan,
  decideReload,
  initialCapacity,
  isClearedAddr,
  type DecideResult,
  type Plan,
  type ObservedState,
  type PlanContext,
  type ReloadCause,
  recordFailedReload,
  type FailedReload,
} from '../reconcile/index.js';
import { renderConfig, tcpListeners, configIdentity, staticBackendRefs, type RenderSettings, type Rendered } from '../render/index.js';
import { Reloader, createGuard, ReloadLimiter, haproxyVersion, QuarantineBook, probeSettings, type ReloadGuard } from '../reload/index.js';
import { observe } from './observe.js';
import { applyOps, type ApplyResult } from './apply.js';
import { ManagedHaproxy } from './haproxy-process.js';
import { settingsChanged, stampConfig } from './settings-stamp.js';
import { CertSync, type PassResult } from '../certs/sync.js';
import { certPaths, prepareCertFiles } from '../certs/default.js';

const log = logger('daemon');

export interface DaemonOptions {
  etcd: { endpoints: string[]; prefix: string; tls?: { ca?: string; cert?: string; key?: string }; auth?: { username: string; password: string } };
  stateDir: string;
  mode: 'managed' | 'external';
  haproxyBin: string;
  masterSocket: string;
  runtimeSocket: string;
  render: RenderSettings;
  guard: 'none' | 'iptables';
  /** Network namespace for the iptables guard (tests). Default: none. */
  guardNetns?: string;
  drainTimeoutMs: number;
  holdUntilHealthy: boolean;
  verifyIntervalMs: number;
  reloadMinIntervalMs: number;
  consolidateAfterMs: number;
  coalesceMs: number;
}

/** `warnings`: shown by /readyz without making it fail (e.g. a rejected certificate file, whose predecessor keeps serving). */
export type Readiness = { ready: boolean; reasons: string[]; warnings?: string[] };

export class Daemon {
  readonly metrics = new Metrics();
  readonly #o: DaemonOptions;
  readonly #queue = new PQueue({ concurrency: 1 });
  readonly #runtime: RuntimeClient;
  readonly #master: MasterClient;
  /** Running HAProxy version → capabilities (show info at start and after reloads). */
  readonly #version: VersionTracker;
  /** `haproxy -v` of --haproxy-bin (external mode), for `localCheckFirst`. */
  #localVersion: string | null = null;
  readonly #cfgPath: string;
  #watcher: RegistryWatcher | null = null;
  #managed: ManagedHaproxy | null = null;
  #guard: ReloadGuard | null = null;
  #reloader: Reloader<ReloadCause> | null = null;
  #limiter: ReloadLimiter;
  #registry: Registry | null = null;
  #rejections: Rejection[] = [];
  #appliedConfig = '';
  #drainStartedAt = new Map<string, number>();
  #deferredSince = 0;
  #pendingSince = 0;
  #passQueued = false;
  #timers = new Set<NodeJS.Timeout>();
  #verifyTimer: NodeJS.Timeout | null = null;
  #stopping = false;
  /** Passes wait until start() has HAProxy up and the applied config loaded. */
  #started = false;
  #lastPassOk = false;
  #lastPassError: string | null = null;
  #restarting = false;
  /** Hash of the last render HAProxy refused: not retried until the desired config changes. */
  #refusedConfig: string | null = null;
  /** Why it was refused (haproxy -c's message, a port taken...), for /readyz. */
  #refusedWhy = '';
  /** Backends whose runtime `add backend` path HAProxy refused: a reload adds them (cleared by a reload). */
  #runtimeRefused = new Set<string>();
  /** `--certs`: certificates changed at runtime; its passes run on #queue. */
  #certs: CertSync | null = null;
  /** Services HAProxy refused, left out until their keys change (src/reload/quarantine.ts). */
  readonly #quarantine: QuarantineBook;
  /** The last config the master failed to load: retried with backoff, not every pass (decide.ts). */
  #failed: FailedReload | null = null;

  constructor(opts: DaemonOptions) {
    this.#o = opts;
    this.#cfgPath = path.join(opts.stateDir, 'haproxy.cfg');
    const runtimeTarget: SocketTarget = { path: opts.runtimeSocket };
    this.#runtime = new RuntimeClient(runtimeTarget, { timeoutMs: 5000 });
    this.#master = new MasterClient({ path: opts.masterSocket }, { timeoutMs: 5000 });
    this.#version = new VersionTracker(this.#runtime, {
      onChange: (now) => {
        this.#master.useCapabilities(now.capabilities);
        this.metrics.setHaproxyInfo(now.version?.raw ?? 'unknown', now.label);
      },
    });
    this.#limiter = new ReloadLimiter({ minIntervalMs: opts.reloadMinIntervalMs });
    this.#quarantine = new QuarantineBook({ prefix: opts.etcd.prefix, stateDir: opts.stateDir, onCount: (n) => this.metrics.quarantined.set(n) });
  }

  get registry(): Registry | null {
    return this.#registry;
  }
  get rejections(): readonly Rejection[] {
    return this.#rejections;
  }

  readiness(): Readiness {
    const reasons: string[] = [];
    // An etcd outage after the first load keeps the daemon ready (HAProxy serves the last registry); before it, it is the cause.
    const etcd = this.#watcher?.state;
    const etcdDown = etcd === 'disconnected' ? `: etcd ${this.#o.etcd.endpoints.join(',')} unreachable` : '';
    if (!this.#registry) reasons.push(`registry not loaded yet${etcdDown}`);
    if (!this.#lastPassOk) reasons.push(`last pass failed: ${this.#lastPassError ?? 'no pass yet'}`);
    if (this.#refusedConfig) reasons.push(`the desired haproxy.cfg was refused: ${this.#refusedWhy || 'see the error log'}; HAProxy runs the previous one`);
    const f = this.#failed;
    if (f) reasons.push(`reload failed at the HAProxy master ${f.attempts} time(s) in a row (${f.message}); HAProxy runs the previous config; next try in ${Math.max(0, Math.ceil((f.retryAt - Date.now()) / 1000))} s or when the registry changes`);
    if (this.#stopping) reasons.push('stopping');
    const warnings = [...(this.#certs?.rejected().values() ?? [])].map((e) => `certificate file rejected: ${e.message}`);
    // A bad entry must not take the load balancer out of rotation: reported, not unready (README, troubleshooting).
    for (const q of this.#quarantine.reports()) warnings.push(`service quarantined (left out of haproxy.cfg, the rest is applied): ${q.key}: ${q.message}`);
    return { ready: reasons.length === 0, reasons, warnings };
  }

  async start(): Promise<void> {
    await mkdir(this.#o.stateDir, { recursive: true });
    this.#guard = createGuard(this.#o.guard, { netns: this.#o.guardNetns });
    await this.#guard.init();
    this.#reloader = new Reloader<ReloadCause>({
      master: this.#master,
      runtime: this.#runtime,
      guard: this.#guard,
      cfgPath: this.#cfgPath,
      serverStateFile: this.#o.render.serverStateFile,
      // The listeners of the config HAProxy runs now: those are what a reload hands over.
      guardPorts: () => [...new Set(tcpListeners(this.#appliedConfig).map((l) => l.port))],
      haproxyBin: this.#o.haproxyBin,
      validateLocally: () => localCheckFirst(this.#o.mode, this.#version.current, this.#localVersion),
    });
    if (this.#o.mode === 'external') this.#localVersion = await haproxyVersion(this.#o.haproxyBin);

    const watcher = new RegistryWatcher({
      endpoints: this.#o.etcd.endpoints,
      prefix: this.#o.etcd.prefix,
      coalesceMs: this.#o.coalesceMs,
      tls: this.#o.etcd.tls,
      auth: this.#o.etcd.auth,
    });
    this.#watcher = watcher;
    const states = ['idle', 'connecting', 'loading', 'watching', 'disconnected', 'stopped'];
    watcher.onStateChange((s: string) => {
      this.metrics.setEtcdState(s, states);
      if (s === 'watching') this.metrics.setEtcdEndpoint(watcher.endpoint, watcher.endpoints);
    });
    watcher.onUpdate((u: RegistryUpdate) => this.#onRegistry(u));
    // The first load decides the initial config; an unreachable etcd must not block HAProxy
    // from starting with what it last had, so start() does not wait forever.
    const firstLoad = watcher.start();
    await Promise.race([firstLoad, new Promise((r) => setTimeout(r, 5000))]);
    const certs = this.#o.render.hasCerts ? certPaths(this.#o.stateDir, this.#o.render.crtList) : null;
    // The bind's crt-list must exist (never empty) before HAProxy loads a config naming it.
    if (certs) await prepareCertFiles(certs);

    if (this.#o.mode === 'managed') await this.#startManaged();
    await this.#refreshVersion();
    this.#appliedConfig = await readFile(this.#cfgPath, 'utf8').catch(() => '');

    this.#verifyTimer = setInterval(() => {
      void this.requestPass('verify');
      this.#verifyCerts();
    }, this.#o.verifyIntervalMs);
    this.#verifyTimer.unref();
    this.#started = true;
    await this.requestPass('start');
    // After the first pass, which reloads HAProxy into a config with the crt-list bind if needed.
    if (certs && this.#o.render.certsDir && this.#o.render.httpsPort != null) {
      this.#certs = new CertSync({
        ...certs,
        dir: this.#o.render.certsDir,
        client: this.#runtime,
        verifyIntervalMs: 0, // the daemon's verify timer drives it
        schedule: (task) => this.#queue.add(task),
        onPass: (r) => this.#certMetrics(r),
      });
      await this.#certs.start().catch((err: unknown) => log.error({ err }, 'first certificate pass failed; retried on the verify timer'));
    }
  }

  #verifyCerts(): void {
    if (this.#stopping) return;
    this.#certs?.verify().catch((err: unknown) => log.warn({ err }, 'certificate pass failed; retried on the verify timer'));
  }

  #certMetrics(r: PassResult): void {
    for (const f of r.failures) this.metrics.certFailures.inc({ reason: f.reason });
    const st = this.#certs?.status();
    const rejected = [...(this.#certs?.rejected().values() ?? [])].map((e) => ({ path: e.path, reason: String(e.context.problem ?? 'invalid') }));
    if (st) this.metrics.setCertificates(st.served, st.soonestNotAfter, rejected);
  }

  async #startManaged(): Promise<void> {
    const managed = new ManagedHaproxy({
      bin: this.#o.haproxyBin,
      cfgPath: this.#cfgPath,
      masterSocket: this.#o.masterSocket,
      onUnexpectedExit: () => void this.#restartManaged(),
    });
    this.#managed = managed;
    const existing = await readFile(this.#cfgPath, 'utf8').catch(() => null);
    if (existing === null) {
      // Nothing to start from: render the current registry (or an empty one) first.
      const registry = this.#registry ?? EMPTY_REGISTRY;
      await this.#reloader!.write(this.#render(initialCapacity(registry), registry)).catch(async (err: unknown) => {
        if (!(err instanceof ConfigInvalidError)) throw err;
        // A refused entry must not keep HAProxy from starting: start empty, the first pass quarantines it.
        log.warn({ err }, 'the registry\'s first config was refused; starting HAProxy without services, the first pass finds the refused ones');
        await this.#reloader!.write(this.#render(new Map(), EMPTY_REGISTRY));
      });
    }
    await managed.start();
  }

  async #restartManaged(): Promise<void> {
    if (this.#stopping || this.#restarting || !this.#managed) return;
    this.#restarting = true;
    try {
      for (let attempt = 1; !this.#stopping; attempt++) {
        try {
          await this.#managed.start();
          log.warn({ attempt }, 'haproxy restarted after an unexpected exit; re-applying the registry');
          await this.#refreshVersion();
          break;
        } catch (err) {
          log.error({ err, attempt }, 'could not restart haproxy');
          await new Promise((r) => setTimeout(r, backoffDelay(attempt)));
        }
      }
    } finally {
      this.#restarting = false;
    }
    await this.requestPass('haproxy-restarted');
  }

  #onRegistry(u: RegistryUpdate): void {
    this.metrics.registryStale.set(u.stale ? 1 : 0);
    if (u.stale) {
      log.warn({ revision: u.revision }, 'etcd unreachable: keeping the last good registry in force');
      return;
    }
    this.#registry = u.registry;
    this.#rejections = u.rejections;
    this.metrics.rejectedEntries.set(u.rejections.length);
    if (u.rejections.length) this.metrics.rejectionsTotal.inc(u.rejections.length);
    if (!this.#pendingSince) this.#pendingSince = Date.now();
    void this.requestPass(u.cause);
  }

  /** Queues one pass unless one is already waiting (passes always read the latest state). */
  requestPass(why: string): Promise<void> {
    if (this.#stopping || !this.#started) return Promise.resolve();
    if (this.#passQueued) return this.#queue.onIdle();
    this.#passQueued = true;
    return this.#queue.add(async () => {
      this.#passQueued = false;
      await this.#pass(why);
    });
  }

  #later(ms: number, why: string): void {
    const t = setTimeout(() => {
      this.#timers.delete(t);
      void this.requestPass(why);
    }, ms);
    t.unref();
    this.#timers.add(t);
  }

  /** One pass: observe, plan, decide, execute (reload if decided, then the runtime ops). */
  async #pass(why: string): Promise<void> {
    if (!this.#registry) return;
    // Quarantined services are left out of everything (plan, render, runtime ops) until their keys change.
    const registry = this.#quarantine.filter(this.#registry, this.#appliedConfig);
    const started = Date.now();
    let reloadError: unknown = null;
    try {
      let observed = await observe(this.#runtime, this.#o.render, this.#appliedConfig);
      let plan = this.#plan(registry, observed);
      const { decision, rendered } = this.#decide(plan, registry);
      if (decision.action === 'later') {
        log.debug({ waitMs: decision.afterMs }, 'reload rate-limited; runtime changes applied now');
        this.#later(decision.afterMs, 'rate-limited-reload');
      } else if (decision.action === 'none' && decision.why === 'refused') {
        // Same config as the one refused: runtime changes still apply, the error stays reported.
        reloadError = new ConfigInvalidError('the desired config was refused before and has not changed since; fix the registry entry named in the earlier error', {
          reasons: decision.reasons,
          repeat: true,
        });
      } else if (decision.action === 'now' && rendered) {
        try {
          await this.#reload(rendered, decision.reasons, decision.config, registry, plan.capacity);
          observed = await observe(this.#runtime, this.#o.render, this.#appliedConfig);
          plan = this.#plan(registry, observed);
        } catch (err) {
          // A refused or failed reload must not hold back membership changes for the
          // backends that exist: apply those, then report the reload error.
          reloadError = err;
        }
      }
      await this.#apply(plan, registry);
      if (reloadError) throw reloadError;
      this.#updateSlotMetrics(observed);
      // Converged once a pass leaves nothing pending: its operations were applied (a failed
      // one schedules its own retry) and no reload is still wanted.
      if (plan.pending) this.#later(250, 'pending');
      else if (this.#pendingSince && !plan.reload) {
        this.metrics.convergence.observe((Date.now() - this.#pendingSince) / 1000);
        this.#pendingSince = 0;
      }
      if (why === 'verify') await this.#procMetrics();
      this.#lastPassOk = true;
      this.#lastPassError = null;
      this.metrics.passes.inc({ result: 'ok' });
      log.debug({ why, ms: Date.now() - started, ops: plan.ops.length, reasons: plan.reasons.length }, 'pass done');
    } catch (err) {
      this.#lastPassOk = false;
      this.#lastPassError = err instanceof Error ? err.message : String(err);
      this.metrics.passes.inc({ result: 'error' });
      // A refusal already logged in full is not logged again on every pass.
      if (err instanceof UpdaterError && err.context.repeat) log.debug({ err, why }, 'pass: desired config still refused');
      else log.error({ err, why }, 'pass failed; will retry');
      if (this.#managed && !this.#managed.alive() && this.#managed.state === 'adopted') void this.#restartManaged();
      this.#later(err instanceof UpdaterError && err.recoverable ? 250 : 1000, 'retry');
    } finally {
      await this.#quarantine.persist().catch((err: unknown) => log.warn({ err }, 'could not write quarantine.json'));
    }
  }

  #plan(registry: Registry, observed: ObservedState): Plan {
    const ctx: PlanContext = {
      now: Date.now(),
      drainTimeoutMs: this.#o.drainTimeoutMs,
      holdUntilHealthy: this.#o.holdUntilHealthy,
      drainStartedAt: this.#drainStartedAt,
      // New settings need a reload anyway; a runtime add would write them to disk unreloaded.
      dynamicBackends: this.#version.current.capabilities.dynamicBackends && !this.#settingsChanged(),
      runtimeRefused: this.#runtimeRefused,
      staticRefs: staticBackendRefs(this.#appliedConfig),
    };
    const p = makePlan(registry, observed, ctx);
    this.#drainStartedAt = p.drainStartedAt;
    return p;
  }

  async #apply(plan: Plan, registry: Registry): Promise<void> {
    if (plan.ops.length === 0) return;
    const results = await applyOps(this.#runtime, plan.ops, this.#o.render, { waitSrvRemovable: this.#version.current.capabilities.waitSrvRemovable });
    for (const r of results) this.metrics.runtimeCommands.inc({ command: r.family, result: r.ok ? 'ok' : r.code });
    const failed = results.filter((r) => !r.ok);
    if (failed.length) {
      log.warn({ failed: failed.length, first: failed.slice(0, 3) }, 'some runtime commands failed; the next pass re-plans');
      this.#later(250, 'runtime-failures');
    }
    await this.#keepConfigInStep(plan, results, registry);
  }

  /**
   * After backends were added or removed at runtime (3.4+), the config on disk gets them too,
   * so a later reload keeps them and the next pass reads their structure from it. The planner
   * does this only when no other reload is wanted, so the file claims nothing HAProxy does not
   * run. A refused creation is remembered: the next pass plans a reload for that backend.
   */
  async #keepConfigInStep(plan: Plan, results: readonly ApplyResult[], registry: Registry): Promise<void> {
    const created = new Set(plan.ops.filter((o) => o.kind === 'add-backend').map((o) => o.backend));
    const removed = plan.ops.some((o) => o.kind === 'unpublish-backend' || o.kind === 'del-backend');
    if (created.size === 0 && !removed) return;
    for (const r of results) {
      if (r.ok || !('backend' in r.op) || !created.has(r.op.backend)) continue;
      if (!this.#runtimeRefused.has(r.op.backend)) {
        log.warn({ backend: r.op.backend, command: r.family, code: r.code, message: r.message }, 'runtime add of backend refused; falling back to a reload');
      }
      this.#runtimeRefused.add(r.op.backend);
    }
    for (const r of results) {
      if (!r.ok && r.op.kind === 'del-backend') log.info({ backend: r.op.backend, message: r.message }, 'del backend refused; the backend goes at the next reload');
    }
    if ([...created].some((be) => this.#runtimeRefused.has(be))) return;
    try {
      const rendered = this.#render(plan.capacity, registry);
      await this.#reloader!.write(rendered);
      this.#appliedConfig = rendered.config;
      log.info({ added: [...created], removedAtRuntime: removed }, 'backends changed at runtime; config on disk kept in step (no reload)');
    } catch (err) {
      // The running backends are not in the file: the next pass sees no structure for them and reloads.
      log.error({ err }, 'writing the config after a runtime backend change failed');
    }
  }

  #settingsChanged(): boolean {
    return settingsChanged(this.#appliedConfig, this.#o.render);
  }

  /** With `probeDir`: a quarantine probe, its support files there (the stamp stays that of the real settings). */
  #render(capacity: ReadonlyMap<string, number>, registry: Registry | null = this.#registry, probeDir?: string): Rendered {
    const settings = probeDir ? probeSettings(this.#o.render, probeDir) : this.#o.render;
    const rendered = this.#quarantine.render(registry ?? EMPTY_REGISTRY, (r) => renderConfig({ registry: r, capacity, settings }));
    return { ...rendered, config: stampConfig(rendered.config, this.#o.render) };
  }

  /** The decision, with the daemon's deferral and refusal state carried to the next pass. */
  #decide(plan: Plan, registry: Registry): DecideResult & { rendered: Rendered | null } {
    let rendered: Rendered | null = null;
    const result = decideReload({
      plan,
      settingsChanged: this.#settingsChanged(),
      now: Date.now(),
      deferredSince: this.#deferredSince,
      consolidateAfterMs: this.#o.consolidateAfterMs,
      nextAllowedAt: this.#limiter.nextAllowedAt(),
      refusedConfig: this.#refusedConfig,
      failed: this.#failed,
      desiredConfig: () => this.#identity((rendered = this.#render(plan.capacity, registry))),
    });
    this.#deferredSince = result.deferredSince;
    this.#refusedConfig = result.refusedConfig;
    this.#setFailed(result.failed);
    return { ...result, rendered };
  }

  /** What tells two renders apart for the refused-config check (not the registry revision). */
  #identity(rendered: Rendered): string {
    return createHash('sha256').update(configIdentity(rendered.config)).digest('hex');
  }

  async #reload(rendered: Rendered, reasons: readonly ReloadCause[], identity: string, registry: Registry, capacity: ReadonlyMap<string, number>): Promise<void> {
    const count = (result: 'ok' | 'failed') => {
      for (const r of reasons) this.metrics.reloads.inc({ reason: r.kind, result });
    };
    try {
      // A refused render is retried without the services responsible (found by the reloader).
      const source = this.#quarantine.source(registry, this.#appliedConfig, (r, dir) => this.#render(capacity, r, dir));
      const result = await this.#reloader!.reload(rendered, reasons, source);
      if (result.reloaded) this.#limiter.record(Date.now());
      this.#appliedConfig = result.rendered.config;
      this.#quarantine.add(registry, result.quarantined);
      if (this.#failed) log.info({ afterFailures: this.#failed.attempts }, 'reload succeeded after failed ones; backoff cleared');
      this.#setFailed(null);
      this.#runtimeRefused.clear();
      this.#refusedConfig = null;
      this.#deferredSince = 0;
      if (result.reloaded) count('ok');
      log.info({ reasons: reasons.map(({ kind, backend }) => ({ kind, backend })), ms: result.durationMs, reloaded: result.reloaded }, result.reloaded ? 'reloaded haproxy' : 'nothing to reload once the refused services are left out');
    } catch (err) {
      this.#limiter.record(Date.now());
      if (err instanceof ConfigInvalidError) {
        this.#refusedConfig = identity;
        this.#refusedWhy = err.message;
      }
      count('failed');
      if (err instanceof ReloadFailedError || err instanceof ReloadTimeoutError) {
        const prev = this.#failed;
        this.#setFailed(recordFailedReload(prev, identity, err.message, Date.now(), { initialMs: Math.max(2000, 2 * this.#o.reloadMinIntervalMs) }));
        const ctx = { attempts: this.#failed!.attempts, retryInMs: this.#failed!.retryAt - Date.now() };
        await this.#procMetrics();
        // Logged in full when the failing starts; each retry after that is one warn line.
        if (prev) {
          log.warn({ ...ctx, message: err.message }, 'reload failed at the master again; backing off');
          throw new ReloadFailedError(err.message, { ...err.context, ...ctx, repeat: true }, { cause: err });
        }
        log.error({ err, ...ctx }, 'reload failed at the master; retrying with exponential backoff');
      }
      throw err;
    }
    await this.#procMetrics();
    await this.#refreshVersion();
    // The new worker loaded the crt-list from disk, which every certificate pass leaves equal
    // to what is served; a pass queued right after confirms it (and repairs a lost event).
    this.#verifyCerts();
  }

  #setFailed(f: FailedReload | null): void {
    this.#failed = f;
    this.metrics.reloadFailures.set(f?.attempts ?? 0);
    this.metrics.reloadBackoff.set(f ? Math.max(0, f.retryAt - Date.now()) / 1000 : 0);
  }

  /** The master's reload counter and the old workers still finishing (hard-stop-after bounds them). */
  async #procMetrics(): Promise<void> {
    const proc = await this.#master.showProc().catch(() => null);
    if (!proc) return;
    this.metrics.haproxyReloads.set(proc.reloads);
    const serving = new Set(servingWorkers(proc).map((w) => w.pid));
    this.metrics.haproxyOldWorkers.set([...proc.workers, ...proc.oldWorkers].filter((w) => !serving.has(w.pid)).length);
  }

  /** A reload may run another binary: re-read the version; a failed read keeps the last capabilities. */
  async #refreshVersion(): Promise<void> {
    await this.#version.refresh().catch((err: unknown) => log.warn({ err }, 'show info failed: capabilities unchanged'));
  }


  #updateSlotMetrics(observed: ObservedState): void {
    const counts = { free: 0, active: 0, draining: 0, maint: 0, overflow: 0 };
    for (const be of observed.backends.values()) {
      for (const s of be.servers) {
        if (s.dynamic) counts.overflow++;
        else if (s.maint && isClearedAddr(s.addr, s.port)) counts.free++;
        else if (s.maint) counts.maint++;
        else if (s.drain) counts.draining++;
        else counts.active++;
      }
    }
    for (const [state, n] of Object.entries(counts)) this.metrics.slots.set({ state }, n);
  }

  /** Finishes the current step, then stops watching and (managed) stops HAProxy. */
  async stop(): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    if (this.#verifyTimer) clearInterval(this.#verifyTimer);
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
    await this.#certs?.stop();
    this.#queue.clear();
    await this.#queue.onIdle();
    await this.#watcher?.stop().catch((err: unknown) => log.warn({ err }, 'watcher stop failed'));
    await this.#guard?.release().catch((err: unknown) => log.error({ err }, 'guard release failed'));
    if (this.#managed) await this.#managed.stop();
    log.info('stopped');
  }
}
