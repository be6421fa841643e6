/**
 * The mass-deletion hold (pure): a registry update that would take away more than
 * `--max-removal` of the upstreams HAProxy serves, or every upstream of a service that has
 * serving ones, is held. The daemon then applies the *held* registry: the new one, with the
 * removed upstreams and services kept from the last applied one, so additions and
 * modifications go through while HAProxy keeps serving what it has.
 *
 * Released when the registry comes back under the threshold (the next decision finds no
 * hold), or by the operator (`haproxy-updater release-hold`): the release token is the set
 * of removals the operator saw and accepted; a hold made only of those is let through,
 * a hold that removes anything more is not.
 */
import { backendName, type Registry, type Service } from '../model.js';
import type { ObservedServer, ObservedState } from './types.js';

/** `http/<svc>/<id>` or `tcp/<svc>/<id>`: one upstream of the registry, whatever its address. */
export type UpstreamKey = string;

export interface HoldInput {
  /** What the daemon last applied (held or not); null before the first pass: nothing to compare with, no hold. */
  readonly applied: Registry | null;
  /** The registry as etcd has it now. */
  readonly next: Registry;
  /** Servers taking traffic now, as `servingKey(backend, addr, port)` (see `servingSet`). */
  readonly serving: ReadonlySet<string>;
  /** Fraction 0–1 of the serving upstreams an update may take away (`--max-removal`); 1 = never hold. */
  readonly maxRemoval: number;
  /** Removals the operator released (`release-hold`); null = none. */
  readonly released: ReadonlySet<UpstreamKey> | null;
}

export interface Hold {
  /** Upstreams the update removes (held: kept in HAProxy), sorted. */
  readonly removed: readonly UpstreamKey[];
  /** Of those, the ones that serve now. */
  readonly removedServing: number;
  /** Upstreams of the last applied registry that serve now. */
  readonly serving: number;
  /** Services whose every serving upstream the update removes (`http/<svc>`), sorted. */
  readonly emptied: readonly string[];
  /** etcd revision of the held update. */
  readonly revision: string;
  /** One line for /readyz and the log: what is held and why. */
  readonly summary: string;
}

export interface HoldResult {
  /** The registry to apply: `next`, or `next` with the held removals kept. */
  readonly registry: Registry;
  /** Non-null while an update is held. */
  readonly hold: Hold | null;
  /** True when the operator's release let this update through (the daemon then forgets the token). */
  readonly released: boolean;
}

const svcKey = (s: Pick<Service, 'kind' | 'name'>) => `${s.kind}/${s.name}`;

/** The key of a server in `HoldInput.serving`. */
export function servingKey(backend: string, addr: string, port: number): string {
  return `${backend}|${addr}:${port}`;
}

/** Taking traffic: UP and neither in maintenance nor draining. */
export function isServing(s: ObservedServer): boolean {
  return s.up && !s.maint && !s.drain;
}

/** The serving servers of an observation, as `HoldInput.serving`. */
export function servingSet(observed: ObservedState): Set<string> {
  const out = new Set<string>();
  for (const be of observed.backends.values()) for (const s of be.servers) if (isServing(s)) out.add(servingKey(be.name, s.addr, s.port));
  return out;
}

/**
 * `--max-removal`: `50%`, `50` (percent) → 0.5. null when it is not a number of 0–100
 * (the caller names the flag in its error).
 */
export function parseMaxRemoval(text: string): number | null {
  const m = /^\s*(\d+(?:\.\d+)?)\s*%?\s*$/.exec(text);
  if (!m) return null;
  const n = Number(m[1]);
  return n >= 0 && n <= 100 ? n / 100 : null;
}

function services(r: Registry): Service[] {
  return [...r.http.values(), ...r.tcp.values()];
}

function lookup(r: Registry, s: Pick<Service, 'kind' | 'name'>): Service | undefined {
  return s.kind === 'http' ? r.http.get(s.name) : r.tcp.get(s.name);
}

/**
 * True when `next` keeps every upstream (by id) of every service of `applied`: then no hold
 * can engage (decideHold only counts removals) and the answer is `next` as it is. Services
 * kept as the same object are skipped, so an incremental pass at 1000 services checks only
 * the changed ones instead of building the serving set of every server.
 */
export function removesNothing(applied: Registry | null, next: Registry): boolean {
  if (!applied) return true;
  for (const was of services(applied)) {
    const now = lookup(next, was);
    if (now === was) continue;
    if (!now) return false;
    for (const id of was.upstreams.keys()) if (!now.upstreams.has(id)) return false;
  }
  return true;
}

/** The hold decision for one update; see the module comment. */
export function decideHold(i: HoldInput): HoldResult {
  const free: HoldResult = { registry: i.next, hold: null, released: false };
  if (!i.applied || i.maxRemoval >= 1) return free;
  const removed: UpstreamKey[] = [];
  const emptied: string[] = [];
  let serving = 0;
  let removedServing = 0;
  for (const was of services(i.applied)) {
    const now = lookup(i.next, was);
    const be = backendName(was);
    let svcServing = 0;
    let svcRemovedServing = 0;
    for (const u of was.upstreams.values()) {
      const serves = i.serving.has(servingKey(be, u.addr, u.port));
      if (serves) svcServing++;
      if (now?.upstreams.has(u.id)) continue;
      removed.push(`${svcKey(was)}/${u.id}`);
      if (serves) svcRemovedServing++;
    }
    serving += svcServing;
    removedServing += svcRemovedServing;
    // "Every upstream of a service that has serving ones": nothing of it left in the new registry.
    if (svcServing > 0 && (now?.upstreams.size ?? 0) === 0) emptied.push(svcKey(was));
  }
  const overThreshold = serving > 0 && removedServing / serving > i.maxRemoval;
  if (!overThreshold && emptied.length === 0) return free;
  removed.sort();
  emptied.sort();
  if (i.released && removed.every((k) => i.released!.has(k))) return { registry: i.next, hold: null, released: true };
  const why = [
    overThreshold ? `removes ${removedServing} of ${serving} serving upstreams (more than --max-removal ${Math.round(i.maxRemoval * 100)}%)` : null,
    emptied.length ? `removes every upstream of ${emptied.join(', ')}` : null,
  ].filter(Boolean);
  const hold: Hold = {
    removed,
    removedServing,
    serving,
    emptied,
    revision: i.next.revision,
    summary: `registry update held (etcd revision ${i.next.revision}): it ${why.join(' and ')}; HAProxy keeps ${removed.length} upstream(s) (${abbreviate(removed)})`,
  };
  return { registry: keepRemoved(i.applied, i.next), hold, released: false };
}

function abbreviate(keys: readonly string[], max = 5): string {
  return keys.length <= max ? keys.join(', ') : `${keys.slice(0, max).join(', ')} and ${keys.length - max} more`;
}

/** `next` plus what `applied` has and `next` lost: removed upstreams back in their service, removed services whole. */
function keepRemoved(applied: Registry, next: Registry): Registry {
  const http = new Map(next.http);
  const tcp = new Map(next.tcp);
  for (const was of services(applied)) {
    const now = lookup(next, was);
    let merged: Service;
    if (!now) merged = was;
    else {
      const lost = [...was.upstreams.values()].filter((u) => !now.upstreams.has(u.id));
      if (lost.length === 0) continue;
      merged = { ...now, upstreams: new Map([...now.upstreams, ...lost.map((u) => [u.id, u] as const)]) };
    }
    if (merged.kind === 'http') http.set(merged.name, merged);
    else tcp.set(merged.name, merged);
  }
  return { revision: next.revision, http, tcp };
}
