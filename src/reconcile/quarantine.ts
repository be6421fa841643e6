/**
 * Quarantine: the pure half of "one bad service must not hold back the others". When
 * HAProxy refuses a render (`haproxy -c`, or a listener it cannot bind), the executor
 * (src/reload/quarantine.ts) asks HAProxy about subsets of the suspect services; the rules
 * here decide which subsets to try, which services to leave out given the answers, and
 * when a left-out service is tried again (its keys changed). No I/O: the check is injected.
 */
import { backendName, structureKey, type Registry, type Service } from '../model.js';

/** A service left out of haproxy.cfg because HAProxy refused it. */
export interface QuarantineEntry {
  /** `http-<svc>` / `tcp-<svc>`: the identity the renderer and the planner use. */
  readonly backend: string;
  readonly kind: 'http' | 'tcp';
  readonly service: string;
  /** The service's config-relevant definition when it was refused: a change releases it. */
  readonly fingerprint: string;
  /** HAProxy's message (or the bind error) that condemned it. */
  readonly message: string;
  /** ms since epoch. */
  readonly since: number;
}

export type Quarantine = ReadonlyMap<string, QuarantineEntry>;

/**
 * What of a service can make HAProxy refuse a config: its structure (url_reg, ports,
 * options, mode). Upstreams and domains go to slots and map files at runtime after their own
 * validation, so a new upstream does not re-try (and re-refuse) a quarantined service.
 */
export function fingerprint(svc: Service): string {
  return structureKey(svc);
}

/** Every service of a registry by backend name. */
export function servicesByBackend(registry: Registry): Map<string, Service> {
  const out = new Map<string, Service>();
  for (const svc of [...registry.http.values(), ...registry.tcp.values()]) out.set(backendName(svc), svc);
  return out;
}

/** The registry key of a service (`<prefix>/http-services/<svc>`), as an operator would look it up. */
export function serviceKey(prefix: string, e: Pick<QuarantineEntry, 'kind' | 'service'>): string {
  return `${prefix}/${e.kind}-services/${e.service}`;
}

export function quarantineEntry(svc: Service, message: string, now: number): QuarantineEntry {
  return Object.freeze({ backend: backendName(svc), kind: svc.kind, service: svc.name, fingerprint: fingerprint(svc), message, since: now });
}

export interface QuarantineView {
  /** The registry to plan and render from: without the services still quarantined. */
  readonly registry: Registry;
  /** Entries still in force (service present, definition unchanged). */
  readonly kept: Quarantine;
  /** Entries whose service changed or went away: tried again (or simply gone). */
  readonly released: readonly QuarantineEntry[];
}

/**
 * Applies the quarantine to a registry; a service whose keys changed since it was refused is
 * released. A quarantined service with an `accepted` version (it ran before the refused
 * change) keeps that version instead of being left out: a bad edit must not take a serving
 * service away.
 */
export function applyQuarantine(registry: Registry, q: Quarantine, accepted: ReadonlyMap<string, Service> = new Map()): QuarantineView {
  if (q.size === 0) return { registry, kept: q, released: [] };
  const kept = new Map<string, QuarantineEntry>();
  const released: QuarantineEntry[] = [];
  const services = servicesByBackend(registry);
  for (const [backend, e] of q) {
    const svc = services.get(backend);
    if (svc && fingerprint(svc) === e.fingerprint) kept.set(backend, e);
    else released.push(e);
  }
  return { registry: withoutServices(registry, kept.keys(), accepted), kept, released };
}

/**
 * The registry without the given backends (same object when none of them is in it); a
 * backend with an `accepted` version is kept at that version's structure instead.
 */
export function withoutServices(registry: Registry, backends: Iterable<string>, accepted: ReadonlyMap<string, Service> = new Map()): Registry {
  const drop = new Set(backends);
  if (drop.size === 0) return registry;
  const keep = <T extends Service>(m: ReadonlyMap<string, T>): Map<string, T> => {
    const out = new Map<string, T>();
    for (const [name, svc] of m) {
      const be = backendName(svc);
      if (!drop.has(be)) out.set(name, svc);
      else if (accepted.get(be)?.kind === svc.kind) out.set(name, acceptedVersion(accepted.get(be) as T, svc));
    }
    return out;
  };
  const http = keep(registry.http);
  const tcp = keep(registry.tcp);
  if (drop.size > 0 && http.size + tcp.size === registry.http.size + registry.tcp.size && ![...drop].some((b) => accepted.has(b))) return registry;
  return Object.freeze({ revision: registry.revision, http, tcp });
}

/** The accepted structure (url_reg, ports, options) with today's upstreams and domains (runtime state, validated on their own). */
export function acceptedVersion<T extends Service>(accepted: T, current: T): T {
  return current.kind === 'http' ? { ...accepted, upstreams: current.upstreams, domains: current.domains } : { ...accepted, upstreams: current.upstreams };
}

/**
 * The version of each service that HAProxy runs now: services of `registry` whose structure
 * hash is the running config's, added to `prev`; backends the running config no longer has
 * are forgotten.
 */
export function acceptedServices(prev: ReadonlyMap<string, Service>, registry: Registry, applied: ReadonlyMap<string, string>, hash: (svc: Service) => string): Map<string, Service> {
  const out = new Map([...prev].filter(([be]) => applied.has(be)));
  // An unchanged service object was accepted already (kept above while it runs): no hash.
  for (const [be, svc] of servicesByBackend(registry)) if (out.get(be) !== svc && applied.get(be) === hash(svc)) out.set(be, svc);
  return out;
}

/**
 * The first suspects: services whose structure the running config does not have (new or
 * changed since the last accepted config). `applied` is `backend → structure hash` of it.
 */
export function changedServices(registry: Registry, applied: ReadonlyMap<string, string>, hash: (svc: Service) => string): string[] {
  return [...servicesByBackend(registry)].filter(([be, svc]) => applied.get(be) !== hash(svc)).map(([be]) => be).sort();
}

/** Which tcp services bind the given ports (the owner of a port that HAProxy cannot bind). */
export function tcpServicesOnPorts(registry: Registry, ports: Iterable<number>): Map<number, string> {
  const wanted = new Set(ports);
  const out = new Map<number, string>();
  // Name order: the renderer gives a port claimed twice to the first service by name.
  for (const svc of [...registry.tcp.values()].sort((a, b) => (a.name < b.name ? -1 : 1))) {
    for (const p of svc.ports) if (wanted.has(p) && !out.has(p)) out.set(p, backendName(svc));
  }
  return out;
}

/** One `haproxy -c` of the config with `include` of the suspects (and every non-suspect). */
export type SubsetCheck = (include: readonly string[]) => Promise<{ ok: true } | { ok: false; message: string }>;

export interface Culprit {
  readonly backend: string;
  readonly message: string;
}

export interface CulpritSearch {
  /** The services to leave out, each with HAProxy's message about it alone. */
  readonly culprits: readonly Culprit[];
  /** How many checks ran. */
  readonly checks: number;
  /** Without any suspect the config is still refused: the cause is not among them. */
  readonly baseRefused: string | null;
}

/**
 * Group testing over the suspects, given that all of them together were refused with
 * `fullMessage`: first the config without any suspect (it must pass, else the cause lies
 * elsewhere), then halves, recursing into each refused half. One bad service among k costs
 * about 2·log2(k) checks; k = 1 costs one. Each culprit is reported with the message of
 * the smallest refused set that named it alone.
 */
export async function findCulprits(suspects: readonly string[], fullMessage: string, check: SubsetCheck): Promise<CulpritSearch> {
  let checks = 0;
  const run: SubsetCheck = (include) => {
    checks++;
    return check(include);
  };
  const base = await run([]);
  if (!base.ok) return { culprits: [], checks, baseRefused: base.message };
  const culprits: Culprit[] = [];
  // `known`: this group is already known to be refused with that message.
  const search = async (group: readonly string[], known: string | null): Promise<void> => {
    let message = known;
    if (message === null) {
      const r = await run(group);
      if (r.ok) return;
      message = r.message;
    }
    if (group.length === 1) {
      culprits.push({ backend: group[0]!, message });
      return;
    }
    const mid = Math.ceil(group.length / 2);
    await search(group.slice(0, mid), null);
    await search(group.slice(mid), null);
  };
  await search([...suspects], fullMessage);
  return { culprits, checks, baseRefused: null };
}
