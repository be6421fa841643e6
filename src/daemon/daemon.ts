/**
 * The daemon: one-way flow. The watcher turns etcd into a typed Registry and only ever
 * requests a pass; a single queue (concurrency 1) runs passes, each of which observes
 * HAProxy, plans (pure), decides about a reload (pure, reconcile/decide.ts) and executes:
 * a render + validated + guarded reload when decided, then the runtime operations in one
 * batch. Nothing else talks to HAProxy, so nothing races.
 */
import { readFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import path from 'node:path';
import PQueue from 'p-queue';
import { logger } from '../log.js';
import { backoffDelay } from '../backoff.js';
import { Metrics } from '../metrics.js';
import { EMPTY_REGISTRY, backendName, type Registry, type Rejection, type Service } from '../model.js';
import { ConfigInvalidError, ReloadFailedError, ReloadTimeoutError, UpdaterError } from '../errors.js';
import { RegistryWatcher, type AddressPolicy, type RegistryUpdate } from '../watch/index.js';
import { RuntimeClient, MasterClient, VersionTracker, localCheckFirst, servingWorkers, type SocketTarget } from '../runtime/index.js';
import {
  plan as makePlan,
  planScoped,
  changedBackends,
  decideReload,
  initialCapacity,
  isClearedAddr,
  decideHold,
  removesNothing,
  servingSet,
  type DecideResult,
  type Hold,
  type HoldResult,
  type UpstreamKey,
  type Plan,
  type ObservedState,
  type PlanContext,
  type ReloadCause,
  recordFailedReload,
  type FailedReload,
} from '../reconcile/index.js';
import { renderConfig, tcpListeners, configIdentity, staticBackendRefs, type RenderSettings, type Rendered } from '../render/index.js';
import { Reloader, createGuard, ReloadLimiter, haproxyVersion, ensurePrivateDir, QuarantineBook, probeSettings, type ReloadGuard } from '../reload/index.js';
import { bindHost } from '../render/safe.js';
import { observe, observeBackends } from './observe.js';
import { HaproxyModel } from './model.js';
import { applyOps, repairMapFiles, type ApplyResult } from './apply.js';
import { AppliedState, repairServerStateFile, testCrashPoint, type ConfirmedBy, type StartedHow } from './applied.js';
import { ManagedHaproxy } from './haproxy-process.js';
import { settingsChanged, stampConfig } from './settings-stamp.js';
import { CertSync, type PassResult } from '../certs/sync.js';
import { certPaths, prepareCertFiles } from '../certs/default.js';
import { ReadinessTracker, type Readiness } from './readiness.js';
import { Admission } from '../admission/admit.js';
import { holdsNewServers, type AdmissionMode } from '../admission/mode.js';
import { afterPass } from '../heap.js';

const log = logger('daemon');
/** Above this many changed backends a pass reads everything: one full read is then cheaper. */
const MAX_INCREMENTAL_BACKENDS = 64;
/**
 * Backends one verify tick reads and repairs when HAProxy runs more than this many: a full
 * read+plan at 1000 services takes most of a second on the one queue, and a registry change
 * arriving meanwhile would wait for it. A full verify pass (maps, files, reload decision)
 * follows each complete rotation. Below the chunk size a verify tick is a full pass as ever.
 * Kept under MAX_INCREMENTAL_BACKENDS so a change merged into the same pass stays incremental.
 */
const VERIFY_CHUNK = 48;
const SLOT_STATES = ['free', 'active', 'draining', 'maint', 'overflow'] as const;

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
  /** `--upstream-cidrs` (with the --listen address): upstream addresses it refuses are rejected. Default: none. */
  addressPolicy?: AddressPolicy | null;
  drainTimeoutMs: number;
  /** How a new upstream is let in (src/admission): probe, check (HAProxy's), immediate. */
  admission: AdmissionMode;
  /** Deadline of one admission probe, ms. */
  admissionTimeoutMs: number;
  verifyIntervalMs: number;
  reloadMinIntervalMs: number;
  consolidateAfterMs: number;
  coalesceMs: number;
  /** `--max-removal` as a fraction 0–1: an update removing more of the serving upstreams is held (reconcile/hold.ts). Default 0.5. */
  maxRemoval?: number;
  /** `--ready-grace`: how long a service without a serving server holds /readyz at 503. Default 10 000. */
  readyGraceMs?: number;
}

export type { Readiness } from './readiness.js';

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
  /** `<state-dir>/applied.json`: the config confirmed running (see applied.ts). */
  readonly #applied: AppliedState;
  /** The config on disk was never confirmed running: the next pass reloads. */
  #mustReload = false;
  #drainStartedAt = new Map<string, number>();
  #deferredSince = 0;
  #pendingSince = 0;
  #passQueued = false;
  /** Backends changed in the registry since the last pass started; null: the next pass is a full one. */
  #dirty: Set<string> | null = null;
  /** HAProxy as known between full reads (model.ts): what incremental passes start from. */
  readonly #model = new HaproxyModel();
  #refsOf: { config: string; refs: ReadonlySet<string> } | null = null;
  /** Passes asked for later, one per reason (see #later). */
  readonly #timers = new Map<string, { at: number; scope: Set<string> | null; timer: NodeJS.Timeout }>();
  #verifyTimer: NodeJS.Timeout | null = null;
  /** Per backend, its slots by state as last read (the `slots` gauge sums them). */
  readonly #slotCounts = new Map<string, Record<(typeof SLOT_STATES)[number], number>>();
  /** Where the verify rotation stands in the sorted backend names (see VERIFY_CHUNK). */
  #verifyCursor = 0;
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
  /** The registry the last pass applied (the held one while a hold is in force): what the next update is compared with. */
  #appliedRegistry: Registry | null = null;
  #hold: Hold | null = null;
  /** Removals the operator released (`release-hold`), until a pass lets them through. */
  #released: Set<UpstreamKey> | null = null;
  readonly #ready: ReadinessTracker;
  /** `--admission probe`: probes held servers off the queue, lets them in through it. */
  #admission: Admission | null = null;
  /** ms of the last render, observed as the reload's `render` phase. */
  #lastRenderMs = 0;
  /** Services HAProxy refused, left out until their keys change (src/reload/quarantine.ts). */
  readonly #quarantine: QuarantineBook;
  /** The last config the master failed to load: retried with backoff, not every pass (decide.ts). */
  #failed: FailedReload | null = null;

  constructor(opts: DaemonOptions) {
    this.#o = opts;
    this.#cfgPath = path.join(opts.stateDir, 'haproxy.cfg');
    this.#applied = new AppliedState(path.join(opts.stateDir, 'applied.json'));
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
    this.#ready = new ReadinessTracker(opts.readyGraceMs ?? 10_000);
    if (opts.admission === 'probe') {
      this.#admission = new Admission({
        runtime: this.#runtime,
        schedule: (task) => this.#queue.add(task),
        desired: () => this.#registry,
        metrics: this.metrics,
        // A plan or /readyz waiting for that server: an incremental pass of its backend shows it UP.
        onAdmitted: (backend, planWaited) => {
          if (planWaited || this.#ready.waiting(Date.now())) void this.requestPass('admitted', new Set([backend]));
        },
        timeoutMs: opts.admissionTimeoutMs,
      });
    }
    this.#quarantine = new QuarantineBook({ prefix: opts.etcd.prefix, stateDir: opts.stateDir, onCount: (n) => this.metrics.quarantined.set(n) });
  }

  get registry(): Registry | null {
    return this.#registry;
  }
  get rejections(): readonly Rejection[] {
    return this.#rejections;
  }

  readiness(): Readiness {
    return this.#ready.compute(
      {
        registryLoaded: this.#registry !== null,
        etcdDown: this.#watcher?.state === 'disconnected' ? this.#o.etcd.endpoints.join(',') : null,
        lastPassOk: this.#lastPassOk,
        lastPassError: this.#lastPassError,
        refused: this.#refusedConfig ? this.#refusedWhy || 'see the error log' : null,
        failedReload: this.#failedReloadReason(),
        stopping: this.#stopping,
        hold: this.#hold,
        warnings: [
          ...[...(this.#certs?.rejected().values() ?? [])].map((e) => `certificate file rejected: ${e.message}`),
          // A bad entry must not take the load balancer out of rotation: reported, not unready (README, troubleshooting).
          ...this.#quarantine.reports().map((q) => `service quarantined (left out of haproxy.cfg, the rest is applied): ${q.key}: ${q.message}`),
        ],
      },
      Date.now(),
    );
  }

  #failedReloadReason(): string | null {
    const f = this.#failed;
    if (!f) return null;
    return `reload failed at the HAProxy master ${f.attempts} time(s) in a row (${f.message}); HAProxy runs the previous config; next try in ${Math.max(0, Math.ceil((f.retryAt - Date.now()) / 1000))} s or when the registry changes`;
  }

  /**
   * `release-hold`: lets the held removals through at the next pass (which it waits for).
   * Returns the hold released, or null when nothing is held.
   */
  async releaseHold(): Promise<Hold | null> {
    const hold = this.#hold;
    if (!hold) return null;
    this.#released = new Set(hold.removed);
    log.warn({ revision: hold.revision, removed: hold.removed.length }, 'held registry update released by the operator: applying the removals');
    await this.requestPass('release-hold');
    return hold;
  }

  async start(): Promise<void> {
    await ensurePrivateDir(this.#o.stateDir);
    // IPv6 or dual-stack (`::`) listeners are guarded in ip6tables too.
    this.#guard = createGuard(this.#o.guard, { netns: this.#o.guardNetns, markerPath: path.join(this.#o.stateDir, 'guard-engaged'), ipv6: bindHost(this.#o.render.bindAddress).addr.includes(':') });
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
      testCrashAt: testCrashPoint(),
    });
    if (this.#o.mode === 'external') this.#localVersion = await haproxyVersion(this.#o.haproxyBin);

    const watcher = new RegistryWatcher({
      endpoints: this.#o.etcd.endpoints,
      prefix: this.#o.etcd.prefix,
      coalesceMs: this.#o.coalesceMs,
      tls: this.#o.etcd.tls,
      auth: this.#o.etcd.auth,
      addressPolicy: this.#o.addressPolicy,
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

    const how: StartedHow = this.#o.mode === 'managed' ? await this.#startManaged() : 'external';
    await this.#refreshVersion();
    await this.#takeRunningConfig(how);

    this.#verifyTimer = setInterval(() => {
      this.#verifyTick();
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

  /** What runs once HAProxy is up (the file only if confirmed, applied.ts); reload in the first pass if unsure. */
  async #takeRunningConfig(how: StartedHow): Promise<void> {
    const onDisk = await readFile(this.#cfgPath, 'utf8').catch(() => null);
    const state = await this.#applied.atStart(onDisk, how);
    this.#appliedConfig = state.running;
    this.#mustReload = state.mustReload;
  }

  /** Records `config` as running; a failed write costs one extra reload after a restart, nothing now. */
  async #confirm(config: string, by: ConfirmedBy): Promise<void> {
    await this.#applied.confirm(config, by).catch((err: unknown) => log.error({ err }, 'could not record the running config (applied.json); a restart will reload once'));
  }

  async #startManaged(): Promise<StartedHow> {
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
    return managed.start();
  }

  async #restartManaged(): Promise<void> {
    if (this.#stopping || this.#restarting || !this.#managed) return;
    this.#restarting = true;
    this.#model.invalidate(); // a new HAProxy: nothing known of it until a full read
    try {
      for (let attempt = 1; !this.#stopping; attempt++) {
        try {
          await this.#takeRunningConfig(await this.#managed.start());
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
    const previous = this.#registry;
    this.#registry = u.registry;
    this.#rejections = u.rejections;
    this.metrics.rejectedEntries.set(u.rejections.length);
    this.metrics.claimConflicts.set(u.rejections.filter((r) => r.claimedBy !== undefined).length);
    if (u.rejections.length) this.metrics.rejectionsTotal.inc(u.rejections.length);
    if (!this.#pendingSince) this.#pendingSince = Date.now();
    // Which backends this change touches (before and after); null (load, resync): all.
    const scope = u.changed === null ? null : changedBackends(previous, u.registry, u.changed);
    void this.requestPass(u.cause, scope);
  }

  /**
   * Queues one pass unless one is already waiting (passes always read the latest state).
   * `scope`: the backends to plan; changes arriving while a pass runs accumulate into the
   * next one. Default (null): a full pass, which reads and plans everything.
   */
  requestPass(why: string, scope: ReadonlySet<string> | null = null): Promise<void> {
    if (this.#stopping || !this.#started) return Promise.resolve();
    if (scope === null) this.#dirty = null;
    else if (this.#dirty !== null) for (const be of scope) this.#dirty.add(be);
    if (this.#passQueued) return this.#queue.onIdle();
    this.#passQueued = true;
    return this.#queue.add(async () => {
      this.#passQueued = false;
      const dirty = this.#dirty;
      this.#dirty = new Set();
      await this.#pass(why, dirty);
    });
  }

  /**
   * One verify tick: a scoped pass that re-reads and repairs the next VERIFY_CHUNK backends
   * (drift in them is repaired like in a full pass), or, after a whole rotation and whenever
   * HAProxy runs few backends or the model is not valid, the full verify pass.
   */
  #verifyTick(): void {
    const names = this.#model.backendNames();
    if (names.length <= VERIFY_CHUNK || this.#verifyCursor >= names.length) {
      this.#verifyCursor = 0;
      void this.requestPass('verify');
      return;
    }
    const chunk = new Set(names.slice(this.#verifyCursor, this.#verifyCursor + VERIFY_CHUNK));
    this.#verifyCursor += VERIFY_CHUNK;
    void this.requestPass('verify-chunk', chunk);
  }

  /**
   * A pass `ms` from now. One timer per reason: asking again for the same reason before it
   * fired widens the waiting timer's scope (and brings it forward if need be) instead of
   * adding a timer. Otherwise every pass that leaves work pending (a drain, a server coming
   * UP) added its own 250 ms timer, each of whose passes added another: with a drain running,
   * passes came every few ms and a registry change often waited behind one.
   */
  #later(ms: number, why: string, scope: ReadonlySet<string> | null = null): void {
    const at = Date.now() + ms;
    const waiting = this.#timers.get(why);
    let widened: Set<string> | null = scope === null ? null : new Set(scope);
    if (waiting) {
      if (waiting.scope === null || widened === null) widened = null;
      else for (const be of waiting.scope) widened.add(be);
      waiting.scope = widened;
      if (waiting.at <= at) return;
      clearTimeout(waiting.timer);
    }
    const fire = () => {
      this.#timers.delete(why);
      void this.requestPass(why, entry.scope);
    };
    const entry = { at, scope: widened, timer: setTimeout(fire, ms) };
    entry.timer.unref();
    this.#timers.set(why, entry);
  }

  /**
   * One pass: observe, plan, decide, execute (reload if decided, then the runtime ops). With a
   * `scope` (the backends of changed services) it is incremental when it may be: only those
   * backends are read and planned; anything else (or null) makes it a full pass.
   */
  async #pass(why: string, scope: ReadonlySet<string> | null = null): Promise<void> {
    if (!this.#registry) return;
    // Quarantined services are left out of everything (plan, render, runtime ops) until their keys change.
    const raw = this.#quarantine.filter(this.#registry, this.#appliedConfig);
    const started = Date.now();
    let reloadError: unknown = null;
    try {
      const inc = scope !== null && this.#incrementalAllowed(scope) ? await this.#planIncremental(raw, scope) : null;
      let { observed, plan, registry } = inc ?? (await this.#observeAndPlan(raw));
      const { decision, rendered } = inc ? { decision: null, rendered: null } : this.#decide(plan, registry);
      if (decision === null) {
        // Incremental: membership and routing of the changed backends, no reload reason: nothing to decide.
      } else if (decision.action === 'later') {
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
          // The registry this pass settled on (held or not) stays: no second hold decision.
          ({ observed, plan } = await this.#observeAndPlan(raw, registry));
        } catch (err) {
          // A refused or failed reload must not hold back membership changes for the
          // backends that exist: apply those, then report the reload error.
          reloadError = err;
        }
      }
      // Probes go straight to the upstreams, so they start beside the batch; what they let in
      // is queued behind this pass. A pass only follows when something waits for them.
      this.#admission?.submit(plan.admission, { passAfter: plan.pending });
      await this.#apply(plan, registry);
      if (why === 'verify') await this.#repairFiles(observed, plan);
      if (reloadError) throw reloadError;
      this.#updateSlotMetrics(observed, inc?.looked);
      this.#updateReadiness(registry, observed, inc?.looked);
      afterPass(plan.ops.length);
      // Converged once a pass leaves nothing pending: its operations were applied (a failed
      // one schedules its own retry) and no reload is still wanted.
      if (plan.pending) this.#later(250, 'pending', inc ? scope : null);
      else if (this.#pendingSince && !plan.reload) {
        this.metrics.convergence.observe((Date.now() - this.#pendingSince) / 1000);
        this.#pendingSince = 0;
      }
      if (why === 'verify') await this.#procMetrics();
      this.#lastPassOk = true;
      this.#lastPassError = null;
      this.metrics.passes.inc({ result: 'ok' });
      this.metrics.passSeconds.observe({ kind: inc ? 'incremental' : 'full' }, (Date.now() - started) / 1000);
      log.debug({ why, incremental: inc !== null, ms: Date.now() - started, ops: plan.ops.length, reasons: plan.reasons.length }, 'pass done');
    } catch (err) {
      this.#lastPassOk = false;
      this.#lastPassError = err instanceof Error ? err.message : String(err);
      this.#model.invalidate();
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

  /** Verify pass: the files HAProxy loads at its next start or reload hold what runs now. */
  async #repairFiles(observed: ObservedState, plan: Plan): Promise<void> {
    // A pass that changed a map wrote its file from the same entries.
    if (!plan.ops.some((o) => o.kind === 'write-map-file')) await repairMapFiles(observed, this.#o.render, this.#appliedConfig);
    await repairServerStateFile(this.#runtime, this.#o.render.serverStateFile);
  }

  /** The registry this pass applies: the raw one, or the held one (reconcile/hold.ts) while a mass removal is held. */
  #applyHold(raw: Registry, observed: ObservedState): Registry {
    return this.#commitHold(raw, this.#decideHold(raw, observed));
  }

  #decideHold(raw: Registry, observed: ObservedState): HoldResult {
    return decideHold({ applied: this.#appliedRegistry, next: raw, serving: servingSet(observed), maxRemoval: this.#o.maxRemoval ?? 0.5, released: this.#released });
  }

  #commitHold(raw: Registry, r: HoldResult): Registry {
    const before = this.#hold;
    if (r.hold && r.hold.summary !== before?.summary) {
      log.error(
        { revision: r.hold.revision, removed: r.hold.removed, emptied: r.hold.emptied },
        `${r.hold.summary}. Restore the keys, or run \`haproxy-updater release-hold\` (POST /release-hold on --listen) to apply the removal`,
      );
    } else if (!r.hold && before) {
      log.warn({ revision: raw.revision, released: r.released }, r.released ? 'held registry update released: applying it' : 'registry back under --max-removal: held update lifted');
    }
    if (!r.hold) this.#released = null;
    this.#hold = r.hold;
    this.metrics.registryHeld.set(r.hold ? 1 : 0);
    this.#appliedRegistry = r.registry;
    return r.registry;
  }

  /** `scope`: an incremental pass's backends, the only ones whose readiness can have changed (others were read before). */
  #updateReadiness(registry: Registry, observed: ObservedState, scope?: ReadonlySet<string>): void {
    const now = Date.now();
    // A quarantined service is reported as such, not waited for as unserved.
    const quarantined = new Set(this.#quarantine.reports().map((q) => q.backend));
    this.#ready.update(quarantined.size ? withoutBackends(registry, quarantined) : registry, observed, now, scope);
    this.metrics.servicesUnserved.set(this.#ready.unserved.length);
    // Servers coming UP are only seen by a pass: look again soon while a service waits within
    // its grace — at those backends only (a scoped pass), not a full read of every backend.
    const waiting = this.#ready.waitingBackends(now);
    if (waiting.size) this.#later(250, 'readiness', waiting);
  }

  /** A full read of HAProxy (which becomes the model) and the plan of every backend. */
  async #observeAndPlan(raw: Registry, settled?: Registry): Promise<{ observed: ObservedState; plan: Plan; registry: Registry }> {
    const observed = await observe(this.#runtime, this.#o.render, this.#appliedConfig);
    this.#model.replace(observed);
    const registry = settled ?? this.#applyHold(raw, observed);
    return { observed, plan: this.#plan(registry, observed)!, registry };
  }

  /**
   * An incremental pass needs a model from a full read and nothing a full pass must look at:
   * a failed last pass, a reload reason waiting (refused, runtime-refused, consolidation due),
   * changed settings, or so many backends that reading them all is as cheap.
   */
  #incrementalAllowed(scope: ReadonlySet<string>): boolean {
    const consolidationDue = this.#deferredSince > 0 && this.#o.consolidateAfterMs > 0 && Date.now() - this.#deferredSince >= this.#o.consolidateAfterMs;
    return (
      this.#model.valid &&
      this.#lastPassOk &&
      this.#refusedConfig === null &&
      this.#runtimeRefused.size === 0 &&
      !consolidationDue &&
      scope.size <= MAX_INCREMENTAL_BACKENDS &&
      !this.#settingsChanged()
    );
  }

  /** Reads the backends in scope (and those our last commands touched), plans them; null: needs a full pass. */
  async #planIncremental(raw: Registry, scope: ReadonlySet<string>): Promise<{ observed: ObservedState; plan: Plan; registry: Registry; looked: ReadonlySet<string> } | null> {
    const read = this.#model.toRead(scope);
    const fresh = await observeBackends(this.#runtime, read, (be) => this.#model.structureHash(be));
    const observed = this.#model.merge(fresh);
    // A hold (engaged, held or lifted) concerns backends outside the scope: a full pass settles it.
    // An update that removes nothing cannot engage one: no need to build the serving set of every server.
    const held: HoldResult = this.#hold === null && removesNothing(this.#appliedRegistry, raw) ? { registry: raw, hold: null, released: false } : this.#decideHold(raw, observed);
    if (held.hold || this.#hold) return null;
    const registry = this.#commitHold(raw, held);
    const plan = this.#plan(registry, observed, scope);
    // Backends planned or freshly read: the only ones whose readiness can have changed.
    return plan ? { observed, plan, registry, looked: new Set([...scope, ...read]) } : null;
  }

  #plan(registry: Registry, observed: ObservedState): Plan;
  #plan(registry: Registry, observed: ObservedState, scope: ReadonlySet<string>): Plan | null;
  #plan(registry: Registry, observed: ObservedState, scope?: ReadonlySet<string>): Plan | null {
    const ctx: PlanContext = {
      now: Date.now(),
      drainTimeoutMs: this.#o.drainTimeoutMs,
      holdUntilHealthy: holdsNewServers(this.#o.admission),
      drainStartedAt: this.#drainStartedAt,
      // New settings need a reload anyway; a runtime add would write them to disk unreloaded.
      dynamicBackends: this.#version.current.capabilities.dynamicBackends && !this.#settingsChanged(),
      runtimeRefused: this.#runtimeRefused,
      staticRefs: this.#staticRefs(),
    };
    const p = scope ? planScoped(registry, observed, { ...ctx, scope }) : makePlan(registry, observed, ctx);
    if (p) this.#drainStartedAt = p.drainStartedAt;
    return p;
  }

  async #apply(plan: Plan, registry: Registry): Promise<void> {
    if (plan.ops.length === 0) return;
    const results = await applyOps(this.#runtime, plan.ops, this.#o.render, { waitSrvRemovable: this.#version.current.capabilities.waitSrvRemovable });
    this.#model.record(results);
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
      await this.#confirm(rendered.config, 'runtime');
      log.info({ added: [...created], removedAtRuntime: removed }, 'backends changed at runtime; config on disk kept in step (no reload)');
    } catch (err) {
      // The running backends are not in the file: the next pass sees no structure for them and reloads.
      log.error({ err }, 'writing the config after a runtime backend change failed');
    }
  }

  /** The applied config's static backend references, read once per config (a scan of every line). */
  #staticRefs(): ReadonlySet<string> {
    if (this.#refsOf?.config !== this.#appliedConfig) this.#refsOf = { config: this.#appliedConfig, refs: staticBackendRefs(this.#appliedConfig) };
    return this.#refsOf.refs;
  }

  #settingsChanged(): boolean {
    return settingsChanged(this.#appliedConfig, this.#o.render);
  }

  /** With `probeDir`: a quarantine probe, its support files there (the stamp stays that of the real settings). */
  #render(capacity: ReadonlyMap<string, number>, registry: Registry | null = this.#registry, probeDir?: string): Rendered {
    const t = performance.now();
    const settings = probeDir ? probeSettings(this.#o.render, probeDir) : this.#o.render;
    const rendered = this.#quarantine.render(registry ?? EMPTY_REGISTRY, (r) => renderConfig({ registry: r, capacity, settings }));
    const out = { ...rendered, config: stampConfig(rendered.config, this.#o.render) };
    if (!probeDir) this.#lastRenderMs = performance.now() - t;
    return out;
  }

  /** The decision, with the daemon's deferral and refusal state carried to the next pass. */
  #decide(plan: Plan, registry: Registry): DecideResult & { rendered: Rendered | null } {
    let rendered: Rendered | null = null;
    const result = decideReload({
      plan,
      // A config on disk never confirmed running counts as out of date: reload (see applied.ts).
      settingsChanged: this.#settingsChanged() || this.#mustReload,
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
      if (result.reloaded) {
        this.#mustReload = false;
        await this.#confirm(result.rendered.config, 'reload');
      }
      this.#quarantine.add(registry, result.quarantined);
      if (this.#failed) log.info({ afterFailures: this.#failed.attempts }, 'reload succeeded after failed ones; backoff cleared');
      this.#setFailed(null);
      this.#runtimeRefused.clear();
      this.#refusedConfig = null;
      this.#deferredSince = 0;
      if (result.reloaded) {
        count('ok');
        this.metrics.reloadPhase.observe({ phase: 'render' }, this.#lastRenderMs / 1000);
        this.metrics.reloadPhase.observe({ phase: 'check' }, result.phases.checkMs / 1000);
        this.metrics.reloadPhase.observe({ phase: 'reload' }, result.phases.reloadMs / 1000);
      }
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


  /** `scope`: an incremental pass's backends; the others keep the counts of their last read. */
  #updateSlotMetrics(observed: ObservedState, scope?: ReadonlySet<string>): void {
    if (scope === undefined) this.#slotCounts.clear();
    for (const be of scope ?? observed.backends.keys()) {
      const ob = observed.backends.get(be);
      if (!ob) {
        this.#slotCounts.delete(be);
        continue;
      }
      const c = { free: 0, active: 0, draining: 0, maint: 0, overflow: 0 };
      for (const s of ob.servers) {
        if (s.dynamic) c.overflow++;
        else if (s.maint && isClearedAddr(s.addr, s.port)) c.free++;
        else if (s.maint) c.maint++;
        else if (s.drain) c.draining++;
        else c.active++;
      }
      this.#slotCounts.set(be, c);
    }
    const counts = { free: 0, active: 0, draining: 0, maint: 0, overflow: 0 };
    for (const c of this.#slotCounts.values()) for (const k of SLOT_STATES) counts[k] += c[k];
    for (const [state, n] of Object.entries(counts)) this.metrics.slots.set({ state }, n);
  }

  /** Finishes the current step, then stops watching and (managed) stops HAProxy. */
  async stop(): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    if (this.#verifyTimer) clearInterval(this.#verifyTimer);
    for (const t of this.#timers.values()) clearTimeout(t.timer);
    this.#timers.clear();
    await this.#certs?.stop();
    await this.#admission?.stop();
    this.#queue.clear();
    await this.#queue.onIdle();
    await this.#watcher?.stop().catch((err: unknown) => log.warn({ err }, 'watcher stop failed'));
    await this.#guard?.release().catch((err: unknown) => log.error({ err }, 'guard release failed'));
    if (this.#managed) await this.#managed.stop();
    log.info('stopped');
  }
}

function withoutBackends(registry: Registry, backends: ReadonlySet<string>): Registry {
  const keep = <S extends Service>(m: ReadonlyMap<string, S>) => new Map([...m].filter(([, svc]) => !backends.has(backendName(svc))));
  return { ...registry, http: keep(registry.http), tcp: keep(registry.tcp) };
}
