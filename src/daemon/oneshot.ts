/**
 * The one-shot commands `render`, `plan` and `status`: the same registry load as the
 * watcher (src/watch loadRegistryOnce), the same observe and planner as a daemon pass,
 * run once. They return data; src/cli.ts prints it.
 */
import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { backendName, type Registry, type Rejection } from '../model.js';
import { loadRegistryOnce, type LoadOnceOptions } from '../watch/index.js';
import { RuntimeClient, MasterClient, capabilitiesFor, parseInfo, showInfo, summarizeInfo, type ProcInfo } from '../runtime/index.js';
import { plan as makePlan, describePlan, decideReload, initialCapacity, isClearedAddr, type Plan, type ReloadDecision } from '../reconcile/index.js';
import { renderConfig, defaultSettings, staticBackendRefs, type RenderSettings, type Rendered } from '../render/index.js';
import { atomicWrite, readQuarantine, type QuarantineReport } from '../reload/index.js';
import { observe } from './observe.js';
import { settingsChanged } from './settings-stamp.js';
import { unservedServices, type Unserved } from './readiness.js';

/** What the one-shot commands need to reach etcd (as DaemonOptions.etcd). */
export type EtcdOptions = LoadOnceOptions;

/** haproxy.cfg (and its support files) for the registry as it is now, with the first-render capacity. */
export async function renderOnce(etcd: EtcdOptions, settings: RenderSettings): Promise<{ rendered: Rendered; rejections: Rejection[] }> {
  const { registry, rejections } = await loadRegistryOnce(etcd);
  return { rendered: renderConfig({ registry, capacity: initialCapacity(registry), settings }), rejections };
}

/** What `render` prints instead of a secret. */
export const REDACTED = '<redacted>';

/**
 * The config with the stats password replaced by REDACTED, for printing: a terminal or a
 * CI log is no place for it (`render --out` writes the real one, 0600).
 */
export function redactConfig(config: string, settings: Pick<RenderSettings, 'statsPassword'>): string {
  let out = config.replace(/^(\s*user\s+\S+\s+insecure-password\s+)\S+/gm, `$1${REDACTED}`);
  const pw = settings.statsPassword;
  if (pw) out = out.split(pw).join(REDACTED);
  return out;
}

/** Writes a render to `out` with its support files where the config names them. */
export async function writeRenderedFiles(out: string, rendered: Rendered): Promise<void> {
  await mkdir(path.dirname(out), { recursive: true });
  for (const [file, content] of rendered.files) {
    await mkdir(path.dirname(file), { recursive: true });
    await atomicWrite(file, content);
  }
  await atomicWrite(out, rendered.config);
}

interface HaproxyAt {
  stateDir: string;
  /** Admin socket; default `<stateDir>/admin.sock`. */
  runtimeSocket?: string;
}

async function observeAt(at: HaproxyAt) {
  const base = defaultSettings(at.stateDir);
  const runtime = new RuntimeClient({ path: at.runtimeSocket ?? base.adminSocket }, { timeoutMs: 5000 });
  const cfg = await readFile(path.join(at.stateDir, 'haproxy.cfg'), 'utf8').catch(() => '');
  // The running version's capabilities decide, as in `run`, whether a new service needs a reload.
  const caps = await runtime
    .run(showInfo())
    .then((text) => capabilitiesFor(summarizeInfo(parseInfo(text)).version))
    .catch(() => capabilitiesFor(null));
  return { observed: await observe(runtime, base, cfg), cfg, caps };
}

export interface PlanOnceOptions extends HaproxyAt {
  etcd: EtcdOptions;
  /** The render settings `run` would have with the same flags: a difference from the running config's is a reload reason. */
  settings: RenderSettings;
  drainTimeoutMs: number;
  holdUntilHealthy: boolean;
}

/**
 * What `run` would do now: one observe, one plan and the daemon's reload decision (with no
 * rate limit or deferral history, as after a start); `lines` describe it, the first says
 * whether and why HAProxy would reload.
 */
export async function planOnce(o: PlanOnceOptions): Promise<{ plan: Plan; decision: ReloadDecision; lines: string[]; rejections: Rejection[] }> {
  const { registry, rejections } = await loadRegistryOnce(o.etcd);
  const { observed, cfg, caps } = await observeAt(o);
  const now = Date.now();
  const changed = settingsChanged(cfg, o.settings);
  const plan = makePlan(registry, observed, {
    now,
    drainTimeoutMs: o.drainTimeoutMs,
    holdUntilHealthy: o.holdUntilHealthy,
    drainStartedAt: new Map(),
    dynamicBackends: caps.capabilities.dynamicBackends && !changed,
    staticRefs: staticBackendRefs(cfg),
  });
  const { decision } = decideReload({
    plan,
    settingsChanged: changed,
    now,
    deferredSince: 0,
    // Consolidation needs a deferral history, which a one-shot look does not have.
    consolidateAfterMs: 0,
    nextAllowedAt: 0,
    refusedConfig: null,
    desiredConfig: () => '',
  });
  const lines = describePlan(plan);
  if (decision.action !== 'none') {
    const urgent = decision.reasons.filter((r) => r.urgent).map((r) => (r.kind === 'settings' ? 'settings' : `${r.kind} ${r.backend}`));
    lines[0] = `reload: now (${urgent.join(', ')})`;
    for (const r of decision.reasons) if (r.kind === 'settings') lines.splice(1, 0, `reason [urgent] settings: ${r.detail}`);
  }
  return { plan, decision, lines, rejections };
}

export interface StatusRow {
  backend: string;
  slot: string;
  /** Upstream id by address; `?` when the registry has none there, `-` for a free slot. */
  upstream: string;
  /** `addr:port`, or `(free)`. */
  address: string;
  admin: 'maint' | 'drain' | 'ready';
  status: string;
  check: string;
  sessions: number;
}

export interface StatusOptions extends HaproxyAt {
  etcd: EtcdOptions;
  /** Master socket; default `<stateDir>/master.sock`. */
  masterSocket?: string;
}

/**
 * HAProxy's backends and slots, with the registry's upstream ids where etcd answers.
 * `registryError` is set (and ids are `?`) when etcd is unreachable. `unserved`: the services
 * /readyz waits for or lists (registered upstreams, none serving); null without the registry.
 */
export async function statusOnce(o: StatusOptions): Promise<{ proc: ProcInfo | null; rows: StatusRow[]; registryError: unknown; unserved: Unserved[] | null; quarantined: QuarantineReport[] }> {
  const { observed } = await observeAt(o);
  const master = new MasterClient({ path: o.masterSocket ?? path.join(o.stateDir, 'master.sock') });
  const proc = await master.showProc().catch(() => null);
  let registry: Registry | null = null;
  let registryError: unknown = null;
  try {
    registry = (await loadRegistryOnce(o.etcd)).registry;
  } catch (err) {
    registryError = err;
  }
  const byAddr = new Map<string, string>();
  for (const svc of [...(registry?.http.values() ?? []), ...(registry?.tcp.values() ?? [])]) {
    for (const u of svc.upstreams.values()) byAddr.set(`${backendName(svc)}|${u.addr}:${u.port}`, u.id);
  }
  const rows: StatusRow[] = [];
  for (const be of [...observed.backends.values()].sort((a, b) => a.name.localeCompare(b.name))) {
    for (const s of be.servers) {
      const free = s.maint && isClearedAddr(s.addr, s.port);
      rows.push({
        backend: be.name,
        slot: s.name,
        upstream: free ? '-' : (byAddr.get(`${be.name}|${s.addr}:${s.port}`) ?? '?'),
        address: free ? '(free)' : `${s.addr}:${s.port}`,
        admin: s.maint ? 'maint' : s.drain ? 'drain' : 'ready',
        status: s.status,
        check: s.checkStatus,
        sessions: s.scur,
      });
    }
  }
  // quarantined: services the running daemon left out of haproxy.cfg (it keeps quarantine.json in the state dir).
  return { proc, rows, registryError, unserved: registry ? unservedServices(registry, observed) : null, quarantined: await readQuarantine(o.stateDir) };
}
