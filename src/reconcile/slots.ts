/**
 * Slot arithmetic and the stable assignment of upstreams to servers. Pure.
 *
 * A backend has N template slots `s1..sN` (server-template) and, when they run out,
 * runtime-added overflow servers `x1..` (lost at the next reload, which grows N). Which
 * upstream sits where is re-derived from HAProxy alone, by address: an upstream whose
 * addr:port is on some server keeps that server, also after an updater restart.
 */

import { OVERFLOW_PREFIX, SLOT_PREFIX, nextPowerOfTwo, slotCapacity, type Upstream } from '../model.js';
import type { ObservedServer } from './types.js';

const SLOT_RE = new RegExp(`^${SLOT_PREFIX}([1-9][0-9]*)$`);
const OVERFLOW_RE = new RegExp(`^${OVERFLOW_PREFIX}([1-9][0-9]*)$`);

/** `s<N>` → N, anything else → null. */
export function slotIndex(name: string): number | null {
  const m = SLOT_RE.exec(name);
  return m ? Number(m[1]) : null;
}

export function isSlotName(name: string): boolean {
  return slotIndex(name) !== null;
}

export function slotName(index: number): string {
  return `${SLOT_PREFIX}${index}`;
}

export function overflowName(n: number): string {
  return `${OVERFLOW_PREFIX}${n}`;
}

/** The address a free slot carries (`set server … addr 0.0.0.0 port 1`). */
export const FREE_ADDR = '0.0.0.0';
export const FREE_PORT = 1;
/** Weight of a free slot: the template's initial weight (HAProxy default 1). */
export const FREE_WEIGHT = 1;

/**
 * No upstream address on this server: 0.0.0.0 / :: (template `init-addr …,0.0.0.0`, or
 * cleared by us), or port 0 (port mapping, never ours).
 */
export function isClearedAddr(addr: string, port: number): boolean {
  return addr === FREE_ADDR || addr === '::' || addr === '' || port === 0;
}

/**
 * Maintenance as HAProxy means it (SRV_ADMF_MAINT = FMAINT|IMAINT|RMAINT). `maint` is
 * cross-checked with the `show stat` status: a server in maintenance always shows a
 * status starting with MAINT, while CMAINT alone (admin state 4: a template slot made
 * ready at runtime keeps that flag, notes §6) shows UP/DOWN/DRAIN. So when the status is
 * known and is not MAINT, the server is not in maintenance whatever `maint` says; an
 * observer that folds CMAINT into `maint` would otherwise make every ready slot look
 * like a slot to activate on every pass.
 */
export function inMaint(s: Pick<ObservedServer, 'maint' | 'status'>): boolean {
  return s.maint && (s.status === '' || /^MAINT/i.test(s.status));
}

/** The server with `maint` corrected by inMaint() (same object when nothing changes). */
export function normalizeServer(s: ObservedServer): ObservedServer {
  const m = inMaint(s);
  return m === s.maint ? s : { ...s, maint: m };
}

/** Identity of an upstream in HAProxy: what survives in `show servers state`. */
export function addrKey(addr: string, port: number): string {
  return `${addr.toLowerCase()}|${port}`;
}

// The capacity rule is the model's (the renderer's default slot count uses it too).
export { nextPowerOfTwo, slotCapacity as desiredCapacity };

export type Placement =
  /** Already on this server (matched by addr:port). */
  | { readonly kind: 'existing'; readonly server: ObservedServer }
  /** New: goes into this free template slot. */
  | { readonly kind: 'slot'; readonly server: ObservedServer }
  /** New: no free slot, gets an overflow server of this name. */
  | { readonly kind: 'overflow'; readonly name: string }
  /** New: no free slot and overflow not allowed (static LB algorithm). */
  | { readonly kind: 'none' };

export interface AssignedUpstream {
  readonly upstream: Upstream;
  readonly placement: Placement;
}

export interface SlotAssignment {
  /** One entry per distinct addr:port, in upstream id order. */
  readonly upstreams: readonly AssignedUpstream[];
  /** Servers holding no desired upstream and not reused: to drain/clear/delete (or already free). */
  readonly orphans: readonly ObservedServer[];
  /** Upstream ids dropped because another id (`keptId`) has the same addr:port. */
  readonly duplicates: ReadonlyArray<{ readonly id: string; readonly keptId: string }>;
}

export interface AssignOptions {
  /** Overflow servers may be added (false for static LB algorithms). */
  readonly allowOverflow: boolean;
}

function serverOrder(s: ObservedServer): number {
  const idx = slotIndex(s.name);
  if (idx !== null) return idx;
  const m = OVERFLOW_RE.exec(s.name);
  return 1e9 + (m ? Number(m[1]) : 0);
}

/**
 * Stable assignment of `upstreams` to the servers of one backend.
 *
 * 1. An upstream whose addr:port is on a server keeps that server (whatever its state:
 *    a draining one is taken back). Several candidates: prefer not maint, not drain,
 *    template over overflow, lowest index.
 * 2. The others, in id order, take the lowest free slot. Free = template slot, holding
 *    no desired upstream, in maint, no sessions or queue (a slot in maint is out of
 *    traffic, so one whose old address was never cleared is reused as well).
 * 3. No free slot: an overflow server `x<n>` (lowest n not in use), if allowed.
 */
export function assignSlots(
  upstreams: Iterable<Upstream>,
  servers: readonly ObservedServer[],
  opts: AssignOptions,
): SlotAssignment {
  const sortedServers = servers.map(normalizeServer).sort((a, b) => serverOrder(a) - serverOrder(b) || a.name.localeCompare(b.name));
  const byKey = new Map<string, ObservedServer[]>();
  for (const s of sortedServers) {
    if (isClearedAddr(s.addr, s.port)) continue;
    const k = addrKey(s.addr, s.port);
    const list = byKey.get(k);
    if (list) list.push(s);
    else byKey.set(k, [s]);
  }

  const ordered = [...upstreams].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const seen = new Map<string, string>();
  const duplicates: Array<{ id: string; keptId: string }> = [];
  const distinct: Upstream[] = [];
  for (const u of ordered) {
    const k = addrKey(u.addr, u.port);
    const kept = seen.get(k);
    if (kept !== undefined) {
      duplicates.push({ id: u.id, keptId: kept });
      continue;
    }
    seen.set(k, u.id);
    distinct.push(u);
  }

  const taken = new Set<ObservedServer>();
  const placement = new Map<Upstream, Placement>();
  for (const u of distinct) {
    const cands = byKey.get(addrKey(u.addr, u.port));
    if (!cands) continue;
    const best = [...cands].sort(
      (a, b) =>
        Number(a.maint) - Number(b.maint) ||
        Number(a.drain) - Number(b.drain) ||
        Number(a.dynamic) - Number(b.dynamic) ||
        serverOrder(a) - serverOrder(b),
    )[0];
    if (best) {
      taken.add(best);
      placement.set(u, { kind: 'existing', server: best });
    }
  }

  const free = sortedServers.filter(
    (s) => !s.dynamic && !taken.has(s) && s.maint && s.scur === 0 && s.qcur === 0,
  );
  const usedNames = new Set(servers.map((s) => s.name));
  let nextX = 1;
  for (const u of distinct) {
    if (placement.has(u)) continue;
    const slot = free.shift();
    if (slot) {
      taken.add(slot);
      placement.set(u, { kind: 'slot', server: slot });
    } else if (opts.allowOverflow) {
      while (usedNames.has(overflowName(nextX))) nextX++;
      const name = overflowName(nextX);
      usedNames.add(name);
      placement.set(u, { kind: 'overflow', name });
    } else {
      placement.set(u, { kind: 'none' });
    }
  }

  return {
    upstreams: distinct.map((u) => ({ upstream: u, placement: placement.get(u) ?? { kind: 'none' } })),
    orphans: sortedServers.filter((s) => !taken.has(s)),
    duplicates,
  };
}
