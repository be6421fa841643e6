/**
 * What /readyz says, and why. Ready means serving: besides the daemon's own state (registry
 * loaded, last pass fine, config not refused, no held update), every service with registered
 * upstreams must have a server HAProxy counts as UP, or have waited `--ready-grace` for one;
 * after the grace it is listed in the body (and in `haproxy_updater_services_unserved`)
 * without failing readiness, so one dead upstream cannot take the load balancer out of a
 * rollout for good.
 */
import { backendName, type Registry, type Service } from '../model.js';
import { isServing, type Hold, type ObservedState } from '../reconcile/index.js';

/** `warnings`: shown by /readyz without making it fail (e.g. a rejected certificate file, whose predecessor keeps serving). */
export type Readiness = { ready: boolean; reasons: string[]; warnings?: string[] };

export interface Unserved {
  /** `http/<svc>` or `tcp/<svc>`. */
  readonly service: string;
  readonly backend: string;
  /** Upstreams registered in state `ready`. */
  readonly registered: number;
}

/**
 * Services that have upstreams registered in state `ready` and no serving server in HAProxy.
 * A service whose upstreams are all set to drain or maint in the registry is not expected to
 * serve and is not listed.
 */
export function unservedServices(registry: Registry, observed: ObservedState): Unserved[] {
  return unservedOf([...registry.http.values(), ...registry.tcp.values()], observed).sort(byService);
}

function unservedOf(services: Iterable<Service>, observed: ObservedState): Unserved[] {
  const out: Unserved[] = [];
  for (const svc of services) {
    const registered = readyCount(svc);
    if (registered === 0) continue;
    const backend = backendName(svc);
    const be = observed.backends.get(backend);
    if (be?.servers.some(isServing)) continue;
    out.push({ service: `${svc.kind}/${svc.name}`, backend, registered });
  }
  return out;
}

function readyCount(svc: Service): number {
  let n = 0;
  for (const u of svc.upstreams.values()) if (u.state === 'ready') n++;
  return n;
}

const byService = (a: Unserved, b: Unserved): number => (a.service < b.service ? -1 : a.service > b.service ? 1 : 0);

function hasService(registry: Registry, key: string): boolean {
  const slash = key.indexOf('/');
  const kind = key.slice(0, slash);
  const name = key.slice(slash + 1);
  return kind === 'http' ? registry.http.has(name) : kind === 'tcp' ? registry.tcp.has(name) : false;
}

/** One line per unserved service, as /readyz and `status` print them. */
export function describeUnserved(u: Unserved): string {
  return `${u.service}: no serving upstream in HAProxy (${u.registered} registered, none UP)`;
}

export interface DaemonState {
  registryLoaded: boolean;
  /** etcd endpoints when the watcher is disconnected, else null. */
  etcdDown: string | null;
  lastPassOk: boolean;
  lastPassError: string | null;
  /** Why HAProxy refused the desired config, when it did. */
  refused: string | null;
  /** A reload the master failed, retried with backoff: why and when next, else null. */
  failedReload: string | null;
  stopping: boolean;
  hold: Hold | null;
  warnings: string[];
}

/**
 * Keeps, per service, since when it waits for a first serving server, so the grace counts
 * from when the service (or the daemon) appeared, not from the last pass.
 */
export class ReadinessTracker {
  readonly #graceMs: number;
  /** Service → when it was first seen unserved and never served since. */
  #waitingSince = new Map<string, number>();
  /** Services that had a serving server at least once: a later outage is listed, never a 503. */
  #served = new Set<string>();
  #unserved: Unserved[] = [];

  /** `graceMs`: how long a service without a serving server holds readiness back (--ready-grace). */
  constructor(graceMs: number) {
    this.#graceMs = graceMs;
  }

  /**
   * After each pass: the registry applied and what HAProxy showed. `scope` (an incremental
   * pass): only the services of those backends are looked at again — the others kept what
   * the last look found — so a pass at 1000 services does not walk every upstream.
   */
  update(registry: Registry, observed: ObservedState, now: number, scope?: ReadonlySet<string>): void {
    let all: Service[] = [...registry.http.values(), ...registry.tcp.values()];
    if (scope !== undefined) all = all.filter((svc) => scope.has(backendName(svc)));
    const fresh = unservedOf(all, observed);
    this.#unserved = (scope === undefined ? fresh : [...this.#unserved.filter((u) => !scope.has(u.backend) && hasService(registry, u.service)), ...fresh]).sort(byService);
    const unserved = new Set(this.#unserved.map((u) => u.service));
    // Served: has ready upstreams and is not unserved (a service with none yet is not "served").
    for (const svc of all) {
      const key = `${svc.kind}/${svc.name}`;
      if (!unserved.has(key) && readyCount(svc) > 0) this.#served.add(key);
    }
    for (const s of [...this.#served]) if (!hasService(registry, s)) this.#served.delete(s);
    for (const s of [...this.#waitingSince.keys()]) if (!unserved.has(s) || this.#served.has(s)) this.#waitingSince.delete(s);
    for (const s of unserved) if (!this.#served.has(s) && !this.#waitingSince.has(s)) this.#waitingSince.set(s, now);
  }

  /** Services without a serving server now (all of them, grace or not). */
  get unserved(): readonly Unserved[] {
    return this.#unserved;
  }

  /** Some service still waits within its grace: the daemon re-observes soon rather than at the verify interval. */
  waiting(now: number): boolean {
    return [...this.#waitingSince.values()].some((t) => now - t < this.#graceMs);
  }

  /** Backends of the services still waiting within their grace: what the next readiness look reads (not everything). */
  waitingBackends(now: number): Set<string> {
    const out = new Set<string>();
    for (const u of this.#unserved) {
      const since = this.#waitingSince.get(u.service);
      if (since !== undefined && now - since < this.#graceMs) out.add(u.backend);
    }
    return out;
  }

  compute(d: DaemonState, now: number): Readiness {
    const reasons: string[] = [];
    // An etcd outage after the first load keeps the daemon ready (HAProxy serves the last registry); before it, it is the cause.
    if (!d.registryLoaded) reasons.push(`registry not loaded yet${d.etcdDown ? `: etcd ${d.etcdDown} unreachable` : ''}`);
    if (!d.lastPassOk) reasons.push(`last pass failed: ${d.lastPassError ?? 'no pass yet'}`);
    if (d.refused) reasons.push(`the desired haproxy.cfg was refused: ${d.refused}; HAProxy runs the previous one`);
    if (d.failedReload) reasons.push(d.failedReload);
    if (d.hold) reasons.push(`${d.hold.summary}; release with \`haproxy-updater release-hold\` once the removal is intended`);
    if (d.stopping) reasons.push('stopping');
    const warnings = [...d.warnings];
    for (const u of this.#unserved) {
      const since = this.#waitingSince.get(u.service);
      if (since !== undefined && now - since < this.#graceMs) reasons.push(`${describeUnserved(u)}; waiting up to ${Math.ceil((this.#graceMs - (now - since)) / 1000)}s more (--ready-grace)`);
      else warnings.push(describeUnserved(u));
    }
    return { ready: reasons.length === 0, reasons, warnings };
  }
}
