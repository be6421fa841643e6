/**
 * The planner: desired Registry + observed HAProxy state → ordered runtime ops + reload
 * reasons. Pure: no I/O, no clock (`ctx.now`), no state besides `ctx.drainStartedAt`.
 *
 * ## Classification (design.md "Change classification")
 * - upstream added → a free slot: maint (if not yet) → addr/port → weight (if not the
 *   slot's) → ready; with holdUntilHealthy: → drain → health down → ready (notes §1:
 *   `health down` must come after leaving maint, which resets health to "up").
 *   No free slot → overflow `add-server x<n>` + `enable-health`, then ready once a check
 *   passed (or at once without hold). Static LB backend: no overflow, urgent reload.
 * - upstream removed / address changed → the old server: drain (time recorded) → later
 *   pass, once scur = qcur = 0 or the drain timeout is over → maint → addr 0.0.0.0 port 1
 *   (+ weight 1); overflow: drain → maint → del-server (once idle). A new address is an
 *   addition into another slot, so the old one can drain meanwhile.
 * - weight / requested state (ready, drain, maint) → set-weight / set-state.
 * - domains → map-del / map-set / map-add, then write-map-file once per changed map.
 * - service removed → its domains out of the maps, its servers retired as above,
 *   non-urgent `service-removed` (the backend goes at the next reload).
 * - service added / sslpass toggled / structure hash differs → urgent reason; no runtime
 *   ops for the upstreams of a backend that does not exist yet.
 * - with `ctx.dynamicBackends` (3.4+) and no urgent reason otherwise: a new service that fits
 *   the named defaults is added at runtime (add-backend, servers, publish-backend), and a
 *   removed one leaves at runtime (unpublish-backend, drain, del-server, del-backend); the
 *   choice is `placeNewService` / `placeRemovedService` (dynamic.ts).
 *
 * ## Op order within a plan (make before break)
 * 1. "make": per desired backend (by name): weights, activations, additions into slots,
 *    overflow servers, state changes back to ready. New capacity is in place before
 *    anything points at it or anything is taken away.
 * 2. maps, per map (hosts, then sni): map-del, map-set, map-add, then write-map-file.
 *    A domain is only pointed at a backend that exists now (else it waits for the
 *    reload, whose rendered map file carries it); map-add/set come after the slots of
 *    step 1 are filled; map-del of a removed service comes before its servers drain.
 * 3. "break": requested drain/maint, then retirement of servers holding no desired
 *    upstream (drain start, maint + address clear, del-server), per backend by name.
 * Within one server the ops keep the order above (they go in one batch, in order).
 *
 * Admission: every server the plan holds DOWN (slot activation, overflow with hold) is listed
 * in `plan.admission` with the probe its service's check corresponds to; `--admission probe`
 * lets it in once that probe passes (src/admission), else HAProxy's check decides.
 *
 * Make-before-break across passes: with holdUntilHealthy, a removed server that is still
 * UP is not drained while its backend has no UP desired server but has one warming up
 * (e.g. the address change of a single-upstream service); the drain starts when the
 * new one is UP or its check fails. Without hold, a new server is UP at once.
 */

import { backendName, formatAddrPort as fmtAddr, NAMED_DEFAULTS, SLOT_PREFIX, structureHash, type Balance, type Registry, type Service, type Upstream } from '../model.js';
import { desiredMaps, MAP_NAMES } from './domains.js';
import { placeNewService, placeRemovedService } from './dynamic.js';
import { probeSpecFor, type ProbeSpec } from '../admission/spec.js';
import {
  addrKey,
  assignSlots,
  desiredCapacity,
  FREE_ADDR,
  FREE_PORT,
  FREE_WEIGHT,
  isClearedAddr,
  normalizeServer,
  slotIndex,
} from './slots.js';
import type {
  AdmissionCandidate,
  ObservedBackend,
  ObservedServer,
  ObservedState,
  Op,
  OpKind,
  Plan,
  PlanContext,
  PlanSummary,
  ReloadReason,
  ServerOp,
} from './types.js';

/** Algorithms that take neither dynamic servers nor weights other than 0 and the initial one. */
export const STATIC_LB: ReadonlySet<Balance> = new Set<Balance>(['source', 'static-rr']);

/** Backends this updater owns (backendName() prefixes); others are left alone. */
export const MANAGED_BACKEND_RE = /^(?:http|tls|tcp)-[A-Za-z0-9]/;

const CHECK_PASSED = new Set(['L4OK', 'L6OK', 'L7OK', 'L7OKC', 'PROCOK']);
const CHECK_NO_RESULT = new Set(['', 'INI', 'UNK']);

/** show stat check_status without the "check in progress" marker. */
export function normCheckStatus(s: string): string {
  return s.replace(/^\*\s*/, '').trim();
}
export function checkPassed(s: ObservedServer): boolean {
  return CHECK_PASSED.has(normCheckStatus(s.checkStatus));
}
export function checkFailed(s: ObservedServer): boolean {
  const c = normCheckStatus(s.checkStatus);
  return !CHECK_PASSED.has(c) && !CHECK_NO_RESULT.has(c);
}

export function serverKey(backend: string, server: string): string {
  return `${backend}/${server}`;
}

function emptySummary(): PlanSummary {
  return {
    backends: 0,
    upstreams: 0,
    placed: 0,
    overflowAdded: 0,
    unplaced: 0,
    activated: 0,
    drainsStarted: 0,
    drainsWaiting: 0,
    drainsDeferred: 0,
    slotsReturned: 0,
    overflowDeleted: 0,
    waitingForHealth: 0,
    weightChanges: 0,
    stateChanges: 0,
    mapChanges: 0,
    opsByKind: {},
    warnings: [],
  };
}

/** Mutable accumulator of one planning pass. */
class Pass {
  readonly make: Op[] = [];
  readonly brk: Op[] = [];
  readonly admission: AdmissionCandidate[] = [];
  readonly reasons: ReloadReason[] = [];
  readonly capacity = new Map<string, number>();
  readonly drainStartedAt = new Map<string, number>();
  readonly summary = emptySummary();
  /** New services whose backend may be added at runtime (decided once all reasons are known). */
  readonly newServices: Array<{ be: string; svc: Service }> = [];
  pending = false;
  constructor(readonly ctx: PlanContext) {}
}

export function plan(desired: Registry, observedRaw: ObservedState, ctx: PlanContext): Plan {
  const p = new Pass(ctx);
  const scope = ctx.scope;
  const inScope = (be: string) => scope === undefined || scope.has(be);
  const observed = normalizeObserved(observedRaw, scope);
  const desiredBackends = new Map<string, Service>();
  for (const svc of [...desired.http.values(), ...desired.tcp.values()]) desiredBackends.set(backendName(svc), svc);
  const beNames = (scope === undefined ? [...desiredBackends.keys()] : [...scope].filter((be) => desiredBackends.has(be))).sort();
  if (scope !== undefined) {
    // Drains of backends outside the scope keep their start time.
    for (const [key, t] of ctx.drainStartedAt) if (!scope.has(key.slice(0, key.indexOf('/')))) p.drainStartedAt.set(key, t);
  }
  p.summary.backends = beNames.length;

  for (const be of beNames) {
    const svc = desiredBackends.get(be);
    if (!svc) continue;
    const ob = observed.backends.get(be);
    if (!ob) {
      planMissingBackend(p, be, svc, observed);
      continue;
    }
    const want = structureHash(svc);
    if (ob.structureHash !== want) {
      p.reasons.push({
        kind: 'service-changed',
        backend: be,
        detail: `structure ${ob.structureHash ?? '(none)'} -> ${want}`,
        urgent: true,
      });
    }
    planBackend(p, svc, ob);
  }

  // A runtime add/del writes the desired config to disk without a reload: only when nothing
  // else asks for a reload now, so the file never claims a structure HAProxy does not run.
  const reloadAnyway = p.reasons.some((r) => r.urgent);
  const dyn = { dynamicBackends: ctx.dynamicBackends ?? false, reloadAnyway };
  const created = new Set<string>();
  for (const { be, svc } of p.newServices) {
    const placement = placeNewService(svc, { ...dyn, refused: ctx.runtimeRefused?.has(be) ?? false });
    if (placement.kind === 'runtime') {
      addBackendAtRuntime(p, be, svc);
      // With hold, its domains are routed once a server is UP (a later pass, see planMaps).
      if (!ctx.holdUntilHealthy) created.add(be);
    } else {
      p.reasons.push({ kind: 'service-added', backend: be, detail: `new backend, ${distinctCount(svc.upstreams.values())} upstream(s); reload: ${placement.why}`, urgent: true });
    }
  }

  const gone = [...observed.backends.values()]
    .filter((ob) => inScope(ob.name) && !desiredBackends.has(ob.name) && MANAGED_BACKEND_RE.test(ob.name))
    .sort((a, b) => a.name.localeCompare(b.name));
  for (const ob of gone) {
    if (placeRemovedService(ob.name, { ...dyn, staticRefs: ctx.staticRefs ?? new Set() }) === 'runtime') {
      removeBackendAtRuntime(p, ob);
      continue;
    }
    const busy = ob.servers.filter((s) => !isFreeSlot(s)).length;
    p.reasons.push({
      kind: 'service-removed',
      backend: ob.name,
      detail: `service removed; ${busy} server(s) still to retire; backend dropped at the next reload`,
      urgent: false,
    });
    for (const s of sortServers(ob.servers)) retire(p, s, false, 'service removed');
  }

  const mapOps = planMaps(p, desired, observed, desiredBackends, created);

  const ops = [...p.make, ...mapOps, ...p.brk];
  const byKind: Partial<Record<OpKind, number>> = {};
  for (const o of ops) byKind[o.kind] = (byKind[o.kind] ?? 0) + 1;
  p.summary.opsByKind = byKind;
  p.summary.mapChanges = (byKind['map-add'] ?? 0) + (byKind['map-set'] ?? 0) + (byKind['map-del'] ?? 0);
  p.summary.weightChanges = byKind['set-weight'] ?? 0;

  return {
    ops,
    admission: p.admission,
    reasons: p.reasons,
    reload: p.reasons.some((r) => r.urgent),
    capacity: p.capacity,
    drainStartedAt: p.drainStartedAt,
    pending: p.pending,
    summary: p.summary,
  };
}

/** Normalized servers of the backends in scope (all without a scope); the others as they are. */
function normalizeObserved(o: ObservedState, scope: ReadonlySet<string> | undefined): ObservedState {
  const backends = new Map<string, ObservedBackend>(scope === undefined ? [] : o.backends);
  const names = scope === undefined ? o.backends.keys() : [...scope].filter((be) => o.backends.has(be));
  for (const name of names) {
    const ob = o.backends.get(name) as ObservedBackend;
    backends.set(name, { ...ob, servers: ob.servers.map(normalizeServer) });
  }
  return { ...o, backends };
}

function distinctCount(upstreams: Iterable<Upstream>): number {
  return new Set([...upstreams].map((u) => addrKey(u.addr, u.port))).size;
}

function planMissingBackend(p: Pass, be: string, svc: Service, observed: ObservedState): void {
  const n = distinctCount(svc.upstreams.values());
  p.summary.upstreams += n;
  p.capacity.set(be, desiredCapacity(n, svc.options.minSlots));
  const sibling = svc.kind === 'http' ? backendName({ ...svc, sslPassthrough: !svc.sslPassthrough }) : null;
  if (sibling !== null && observed.backends.has(sibling)) {
    p.reasons.push({
      kind: 'service-changed',
      backend: be,
      detail: `sslpass ${svc.kind === 'http' && svc.sslPassthrough ? 'on' : 'off'}: replaces ${sibling}`,
      urgent: true,
    });
  } else {
    p.newServices.push({ be, svc });
  }
}

/**
 * 3.4+: the new backend from the named defaults, its servers (named like the slots the next
 * render gives it, so a later reload finds them in the state file), then `publish backend`.
 * Its map entries follow in the map step.
 */
function addBackendAtRuntime(p: Pass, be: string, svc: Service): void {
  const why = 'new service, added at runtime';
  p.make.push({ kind: 'add-backend', backend: be, from: NAMED_DEFAULTS, why });
  const seen = new Set<string>();
  const upstreams = [...svc.upstreams.values()].sort((a, b) => a.id.localeCompare(b.id));
  for (const u of upstreams) {
    const k = addrKey(u.addr, u.port);
    if (seen.has(k)) continue;
    seen.add(k);
    const op = { backend: be, server: `${SLOT_PREFIX}${seen.size}`, why: `${why}: ${u.id} ${fmtAddr(u.addr, u.port)}` };
    p.make.push({ ...op, kind: 'add-server', addr: u.addr, port: u.port, weight: u.weight, maxconn: svc.options.maxconn });
    p.make.push({ ...op, kind: 'enable-health' });
    // With hold, the next pass activates it once checked (slot rules: it is named like a slot).
    if (u.state === 'ready' && !p.ctx.holdUntilHealthy) p.make.push({ ...op, kind: 'set-state', state: 'ready' });
    else if (u.state === 'drain') p.make.push({ ...op, kind: 'set-state', state: 'drain' });
    if (u.state === 'ready' && p.ctx.holdUntilHealthy) p.pending = true;
  }
  p.make.push({ kind: 'publish-backend', backend: be, why });
}

/**
 * 3.4+: a removed service's backend leaves at runtime: its domains are out of the maps (map
 * step), then `unpublish backend`, its servers drain and are deleted (slots too: 3.4 deletes
 * config servers), and `del backend` after the last one.
 */
function removeBackendAtRuntime(p: Pass, ob: ObservedBackend): void {
  const be = ob.name;
  if (ob.servers.some((s) => !s.maint && !s.drain)) p.brk.push({ kind: 'unpublish-backend', backend: be, why: 'service removed' });
  const before = p.summary.overflowDeleted;
  for (const s of sortServers(ob.servers)) retire(p, { ...s, dynamic: true }, false, 'service removed');
  if (p.summary.overflowDeleted - before === ob.servers.length) {
    p.brk.push({ kind: 'del-backend', backend: be, why: 'service removed, servers deleted' });
  } else {
    p.pending = true;
  }
}

function sortServers(servers: readonly ObservedServer[]): ObservedServer[] {
  return [...servers].sort((a, b) => {
    const ia = slotIndex(a.name);
    const ib = slotIndex(b.name);
    if (ia !== null && ib !== null) return ia - ib;
    if (ia !== null) return -1;
    if (ib !== null) return 1;
    return a.name.localeCompare(b.name, 'en', { numeric: true });
  });
}

/** A template slot that holds nothing and needs nothing: maint, no address, weight 1, idle. */
function isFreeSlot(s: ObservedServer): boolean {
  return (
    !s.dynamic && s.maint && isClearedAddr(s.addr, s.port) && s.weight === FREE_WEIGHT && s.scur === 0 && s.qcur === 0
  );
}

/**
 * What one backend's placements add up to: desired ready servers that are (or at once will
 * be) UP, those coming up with no check verdict yet, upstreams not in template slots, and
 * the highest slot index holding a desired upstream.
 */
interface Tally {
  serving: number;
  warming: number;
  notInSlots: number;
  keep: number;
}

/** One desired upstream and where it goes, with what every placement needs to know. */
interface Placed {
  readonly be: string;
  readonly u: Upstream;
  /** Weight to apply (static LB algorithms take only 0 and the initial one). */
  readonly weight: number;
  /** `addr:port` for op reasons. */
  readonly addr: string;
  /** The service's admission probe. */
  readonly probe: ProbeSpec;
}

/** `server` now holds `x` DOWN: list it for the admission probe. */
function awaitAdmission(p: Pass, x: Placed, server: string, held: AdmissionCandidate['held']): void {
  p.admission.push({ backend: x.be, server, upstreamId: x.u.id, addr: x.u.addr, port: x.u.port, held, probe: x.probe });
}

function planBackend(p: Pass, svc: Service, ob: ObservedBackend): void {
  const be = ob.name;
  const isStatic = STATIC_LB.has(svc.options.balance);
  const a = assignSlots(svc.upstreams.values(), ob.servers, { allowOverflow: !isStatic });
  p.summary.upstreams += a.upstreams.length;
  for (const d of a.duplicates) {
    p.summary.warnings.push(`${be}: upstream ${d.id} has the same address as ${d.keptId}; ignored`);
  }

  const weightFor = (u: Upstream): number => {
    if (!isStatic || u.weight === 0 || u.weight === FREE_WEIGHT) return u.weight;
    p.summary.warnings.push(
      `${be}: upstream ${u.id} weight ${u.weight} not applicable with balance ${svc.options.balance} (only 0 or ${FREE_WEIGHT}); using ${FREE_WEIGHT}`,
    );
    return FREE_WEIGHT;
  };

  const t: Tally = { serving: 0, warming: 0, notInSlots: 0, keep: 0 };
  const probe = probeSpecFor(svc);
  for (const { upstream: u, placement } of a.upstreams) {
    const x: Placed = { be, u, weight: weightFor(u), addr: fmtAddr(u.addr, u.port), probe };
    switch (placement.kind) {
      case 'existing':
        placeExisting(p, t, x, placement.server);
        break;
      case 'slot':
        placeInSlot(p, t, x, placement.server);
        break;
      case 'overflow':
        placeOverflow(p, t, x, placement.name, svc.options.maxconn);
        break;
      case 'none':
        t.notInSlots++;
        p.summary.unplaced++;
        break;
    }
  }

  if (t.notInSlots > 0) {
    p.reasons.push(
      isStatic
        ? {
            kind: 'static-lb-capacity',
            backend: be,
            detail: `${a.upstreams.length} upstream(s), ${ob.templateSlots} slot(s); balance ${svc.options.balance} takes no dynamic servers`,
            urgent: true,
          }
        : {
            kind: 'capacity',
            backend: be,
            detail: `${t.notInSlots} upstream(s) on overflow servers, ${ob.templateSlots} slot(s)`,
            urgent: false,
          },
    );
  }

  const deferDrains = p.ctx.holdUntilHealthy && t.serving === 0 && t.warming > 0;
  let busyOrphanSlots = 0;
  for (const s of a.orphans) {
    if (!s.dynamic && !(s.maint && s.scur === 0 && s.qcur === 0)) busyOrphanSlots++;
    retire(p, s, deferDrains, 'upstream removed');
  }
  p.capacity.set(be, desiredCapacity(a.upstreams.length + busyOrphanSlots, svc.options.minSlots, t.keep));
}

/** The upstream is already on server `s`: bring weight and requested state in line. */
function placeExisting(p: Pass, t: Tally, x: Placed, s: ObservedServer): void {
  const { be, u } = x;
  const hold = p.ctx.holdUntilHealthy;
  const name = s.name;
  const idx = slotIndex(name);
  if (idx !== null) t.keep = Math.max(t.keep, idx);
  else t.notInSlots++;
  const b = (why: string) => ({ backend: be, server: name, why: `${why} (${u.id} ${x.addr})` });
  if (s.dynamic && s.checkEnabled === false) p.make.push({ ...b('checks were not enabled'), kind: 'enable-health' });
  if (s.weight !== x.weight) p.make.push({ ...b(`weight ${s.weight} -> ${x.weight}`), kind: 'set-weight', weight: x.weight });
  if (u.state === 'ready') {
    if (s.maint) {
      if (s.dynamic) {
        if (!hold || checkPassed(s)) {
          p.make.push({ ...b(hold ? 'check passed, activate' : 'activate'), kind: 'set-state', state: 'ready' });
          p.summary.activated++;
          t.serving++;
        } else {
          p.summary.waitingForHealth++;
          p.pending = true;
          if (!checkFailed(s)) t.warming++;
        }
      } else {
        p.make.push(...activation(be, name, hold, `activate (${u.id} ${x.addr})`));
        p.summary.activated++;
        if (hold) {
          t.warming++;
          awaitAdmission(p, x, name, 'down');
        } else t.serving++;
      }
    } else if (s.drain) {
      p.make.push({ ...b('state drain -> ready'), kind: 'set-state', state: 'ready' });
      p.summary.stateChanges++;
      if (s.up) t.serving++;
    } else if (s.up) {
      t.serving++;
    } else if (!checkFailed(s)) {
      t.warming++;
    }
  } else if (u.state === 'drain') {
    if (!s.drain || s.maint) {
      p.brk.push({ ...b('drain requested'), kind: 'set-state', state: 'drain' });
      p.summary.stateChanges++;
    }
  } else if (!s.maint) {
    p.brk.push({ ...b('maint requested'), kind: 'set-state', state: 'maint' });
    p.summary.stateChanges++;
  }
}

/** A new upstream into the free template slot `s`: maint → addr → weight → activation. */
function placeInSlot(p: Pass, t: Tally, x: Placed, s: ObservedServer): void {
  const { be, u } = x;
  const hold = p.ctx.holdUntilHealthy;
  const idx = slotIndex(s.name);
  if (idx !== null) t.keep = Math.max(t.keep, idx);
  const why = `add ${u.id} ${x.addr}`;
  const op = { backend: be, server: s.name, why };
  if (!s.maint) p.make.push({ ...op, kind: 'set-state', state: 'maint' });
  p.make.push({ ...op, kind: 'set-addr', addr: u.addr, port: u.port });
  if (s.weight !== x.weight) p.make.push({ ...op, kind: 'set-weight', weight: x.weight });
  if (u.state === 'ready') {
    p.make.push(...activation(be, s.name, hold, why));
    p.summary.activated++;
    if (hold) {
      t.warming++;
      awaitAdmission(p, x, s.name, 'down');
    } else t.serving++;
  } else if (u.state === 'drain') {
    p.make.push({ ...op, kind: 'set-state', state: 'drain' });
  }
  p.summary.placed++;
}

/** No free slot: an overflow server `name` (add + enable health; ready at once or once checked). */
function placeOverflow(p: Pass, t: Tally, x: Placed, name: string, maxconn: number | null): void {
  const { be, u } = x;
  t.notInSlots++;
  const why = `add ${u.id} ${x.addr} (overflow: no free slot)`;
  const op = { backend: be, server: name, why };
  p.make.push({ ...op, kind: 'add-server', addr: u.addr, port: u.port, weight: x.weight, maxconn });
  p.make.push({ ...op, kind: 'enable-health' });
  if (u.state === 'drain') {
    p.make.push({ ...op, kind: 'set-state', state: 'drain' });
  } else if (u.state === 'ready') {
    if (p.ctx.holdUntilHealthy) {
      p.summary.waitingForHealth++;
      p.pending = true;
      t.warming++;
      awaitAdmission(p, x, name, 'maint');
    } else {
      p.make.push({ ...op, kind: 'set-state', state: 'ready' });
      p.summary.activated++;
      t.serving++;
    }
  }
  p.summary.overflowAdded++;
}

/** Leaving maint for traffic; with hold, kept DOWN until `rise` checks pass (notes §1). */
function activation(backend: string, server: string, hold: boolean, why: string): ServerOp[] {
  const op = { backend, server, why };
  return hold
    ? [
        { ...op, kind: 'set-state', state: 'drain' },
        { ...op, kind: 'set-health', health: 'down' },
        { ...op, kind: 'set-state', state: 'ready' },
      ]
    : [{ ...op, kind: 'set-state', state: 'ready' }];
}

/** Steps a server holding no desired upstream towards free (slot) or deleted (overflow). */
function retire(p: Pass, s: ObservedServer, deferDrain: boolean, cause: string): void {
  const be = s.backend;
  const key = serverKey(be, s.name);
  const idle = s.scur === 0 && s.qcur === 0;
  const was = isClearedAddr(s.addr, s.port) ? '' : ` ${fmtAddr(s.addr, s.port)}`;
  const op = { backend: be, server: s.name };
  const push = (o: ServerOp) => p.brk.push(o);

  const finish = (why: string): void => {
    if (s.dynamic) {
      if (idle) {
        push({ ...op, kind: 'del-server', why });
        p.summary.overflowDeleted++;
      } else {
        p.pending = true; // del server refuses while connections are attached
      }
      return;
    }
    let any = false;
    if (!isClearedAddr(s.addr, s.port)) {
      push({ ...op, kind: 'set-addr', addr: FREE_ADDR, port: FREE_PORT, why });
      any = true;
    }
    if (s.weight !== FREE_WEIGHT) {
      push({ ...op, kind: 'set-weight', weight: FREE_WEIGHT, why });
      any = true;
    }
    if (any) p.summary.slotsReturned++;
  };

  if (!s.maint && !s.drain) {
    if (deferDrain && s.up) {
      p.summary.drainsDeferred++;
      p.pending = true;
      return;
    }
    push({ ...op, kind: 'set-state', state: 'drain', why: `${cause}${was}: drain` });
    p.drainStartedAt.set(key, p.ctx.now);
    p.summary.drainsStarted++;
    p.pending = true;
    return;
  }
  if (!s.maint) {
    const started = p.ctx.drainStartedAt.get(key) ?? p.ctx.now;
    const timedOut = p.ctx.now - started >= p.ctx.drainTimeoutMs;
    if (!idle && !timedOut) {
      p.drainStartedAt.set(key, started);
      p.summary.drainsWaiting++;
      p.pending = true;
      return;
    }
    const why = `${cause}${was}: ${idle ? 'drained' : 'drain timeout'}`;
    push({ ...op, kind: 'set-state', state: 'maint', why });
    finish(why);
    return;
  }
  finish(`${cause}${was}: return to pool`);
}

function planMaps(
  p: Pass,
  desired: Registry,
  observed: ObservedState,
  desiredBackends: ReadonlyMap<string, Service>,
  created: ReadonlySet<string>,
): Op[] {
  const dm = desiredMaps(desired);
  for (const c of dm.conflicts) {
    p.summary.warnings.push(`${c.map} map: domain ${c.domain} claimed by ${[c.winner, ...c.losers].join(', ')}; ${c.winner} wins`);
  }
  const exists = (be: string) => observed.backends.has(be) || created.has(be);
  const out: Op[] = [];
  for (const map of MAP_NAMES) {
    const want = new Map<string, string>();
    const cur = map === 'hosts' ? observed.hostsMap : observed.sniMap;
    const target = map === 'hosts' ? dm.hosts : dm.sni;
    const routed = new Set(cur.values());
    const scope = p.ctx.scope;
    for (const [k, v] of target) {
      const c = cur.get(k);
      if (scope !== undefined && !scope.has(v) && (c === undefined || !scope.has(c))) {
        // Outside an incremental pass's scope: left as it is (a full pass plans it).
        if (c !== undefined) want.set(k, c);
        continue;
      }
      if (!routed.has(v) && warmingOnly(observed.backends.get(v))) {
        // A backend nothing routes to yet (added at runtime, hold until healthy): its first
        // domain waits for its first UP server rather than answering 503 meanwhile.
        p.pending = true;
        continue;
      }
      if (exists(v)) {
        want.set(k, v);
        continue;
      }
      // Target backend arrives with the reload; keep a still-valid current route meanwhile.
      if (c !== undefined && desiredBackends.has(c) && exists(c)) want.set(k, c);
    }
    if (scope !== undefined) {
      // Entries no desired service claims, of backends outside the scope: left as they are.
      for (const [k, c] of cur) if (!target.has(k) && !scope.has(c)) want.set(k, c);
    }
    const ops: Op[] = [];
    const keys = (m: ReadonlyMap<string, string>) => [...m.keys()].sort();
    for (const k of keys(cur)) {
      if (!want.has(k)) ops.push({ kind: 'map-del', map, key: k, why: `${k} no longer routed (was ${cur.get(k)})` });
    }
    for (const k of keys(want)) {
      const v = want.get(k) as string;
      const c = cur.get(k);
      if (c !== undefined && c !== v) ops.push({ kind: 'map-set', map, key: k, value: v, why: `${k} moves ${c} -> ${v}` });
    }
    for (const k of keys(want)) {
      const v = want.get(k) as string;
      if (!cur.has(k)) ops.push({ kind: 'map-add', map, key: k, value: v, why: `${k} -> ${v}` });
    }
    if (ops.length > 0) {
      const entries = keys(want).map((k) => [k, want.get(k) as string] as const);
      ops.push({ kind: 'write-map-file', map, entries, why: `${ops.length} change(s) in the ${map} map` });
      out.push(...ops);
    }
  }
  return out;
}

/** A backend with no UP server and at least one whose checks have not failed yet. */
function warmingOnly(ob: ObservedBackend | undefined): boolean {
  if (!ob || ob.servers.some((s) => s.up && !s.maint)) return false;
  return ob.servers.some((s) => !checkFailed(s) && !isClearedAddr(s.addr, s.port));
}

/**
 * Slot capacity of every backend for a first render, when HAProxy runs nothing yet: the
 * planner's own rule (distinct addresses, minSlots, powers of two), from an empty observation.
 */
export function initialCapacity(desired: Registry): Map<string, number> {
  const empty: ObservedState = { backends: new Map(), hostsMap: new Map(), sniMap: new Map() };
  return plan(desired, empty, { now: 0, drainTimeoutMs: 0, holdUntilHealthy: false, drainStartedAt: new Map() }).capacity;
}
