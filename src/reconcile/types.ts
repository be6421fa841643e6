/**
 * Types of the pure planner: what HAProxy looks like now (Observed*), what to do about it
 * (Op, ReloadReason) and the result of one planning pass (Plan).
 *
 * The planner keeps no private state: everything it needs to know about HAProxy comes in
 * an ObservedState, and the only thing carried from pass to pass is `drainStartedAt`
 * (which the daemon hands back; losing it, e.g. on restart, only restarts drain timers).
 */

import type { UpstreamState } from '../model.js';
import type { ProbeSpec } from '../admission/spec.js';

/** One server line of a backend, merged from `show servers state` and `show stat`. */
export interface ObservedServer {
  readonly backend: string;
  readonly name: string;
  /** Current address: '0.0.0.0' for a free slot. */
  readonly addr: string;
  /** Current port: 1 (or 0) for a free slot. */
  readonly port: number;
  /**
   * In maintenance: admin state has FMAINT, IMAINT or RMAINT (HAProxy's SRV_ADMF_MAINT
   * mask 0x23). NOT CMAINT (0x04): that flag only records "disabled in the config" and
   * stays set on a template slot after `set server state ready` (admin 4 = ready slot,
   * notes §6). See `adminIsMaint()` in src/model.ts.
   */
  readonly maint: boolean;
  /** FDRAIN (0x08) or IDRAIN (0x10). */
  readonly drain: boolean;
  /** Operational state running (srv_op_state 2). */
  readonly up: boolean;
  /** User weight (srv_uweight). */
  readonly weight: number;
  /** Current sessions (show stat scur). */
  readonly scur: number;
  /** Queued requests (show stat qcur). */
  readonly qcur: number;
  /** show stat status: 'UP', 'UP 1/2', 'DOWN', 'DOWN 1/2', 'DRAIN', 'MAINT', 'no check', … */
  readonly status: string;
  /** show stat check_status: 'L4OK', 'L7OK', 'L4CON', 'INI', … (a leading '* ' is allowed). */
  readonly checkStatus: string;
  /** Not a template slot: the name does not match /^s\d+$/ (runtime-added overflow server). */
  readonly dynamic: boolean;
  /**
   * Health checks enabled (check state has CHK_ST_ENABLED 0x04). Optional: undefined means
   * unknown and is taken as enabled. Used to repair an overflow server whose
   * `enable health` was lost (daemon stopped between `add server` and `enable health`).
   */
  readonly checkEnabled?: boolean;
}

export interface ObservedBackend {
  readonly name: string;
  readonly servers: readonly ObservedServer[];
  /** Count of `s<N>` servers (template slots) in the running config. */
  readonly templateSlots: number;
  /** From the running config's `# structure <hash>` line; null if absent. */
  readonly structureHash: string | null;
}

export interface ObservedState {
  readonly backends: ReadonlyMap<string, ObservedBackend>;
  /** hosts map: domain → backend. */
  readonly hostsMap: ReadonlyMap<string, string>;
  /** sni map: domain → backend (`tls-<svc>`). */
  readonly sniMap: ReadonlyMap<string, string>;
}

export type MapName = 'hosts' | 'sni';

interface ServerOpBase {
  readonly backend: string;
  readonly server: string;
  /** Human-readable reason, for logs and the `plan` CLI. */
  readonly why: string;
}

/** `set server <b>/<s> addr <addr> port <port>` */
export interface SetAddrOp extends ServerOpBase { readonly kind: 'set-addr'; readonly addr: string; readonly port: number }
/** `set server <b>/<s> state ready|drain|maint` */
export interface SetStateOp extends ServerOpBase { readonly kind: 'set-state'; readonly state: UpstreamState }
/** `set server <b>/<s> weight <w>` (absolute 0–256) */
export interface SetWeightOp extends ServerOpBase { readonly kind: 'set-weight'; readonly weight: number }
/** `set server <b>/<s> health up|down` */
export interface SetHealthOp extends ServerOpBase { readonly kind: 'set-health'; readonly health: 'up' | 'down' }
/**
 * `add server <b>/<s> <addr>:<port> weight <w> [maxconn <m>] check` — an overflow server.
 * The daemon adds `check` (and the check timing: `default-server` does not apply to
 * dynamic servers, notes §3). It starts in MAINT; `enable-health` follows.
 */
export interface AddServerOp extends ServerOpBase {
  readonly kind: 'add-server';
  readonly addr: string;
  readonly port: number;
  readonly weight: number;
  /** Per-server maxconn from the service options; null = none. */
  readonly maxconn: number | null;
}
/** `enable health <b>/<s>` */
export interface EnableHealthOp extends ServerOpBase { readonly kind: 'enable-health' }
/** `del server <b>/<s>` (server is in maint and idle) */
export interface DelServerOp extends ServerOpBase { readonly kind: 'del-server' }

interface MapOpBase { readonly map: MapName; readonly key: string; readonly why: string }
/** `add map <file> <key> <value>` (key not present) */
export interface MapAddOp extends MapOpBase { readonly kind: 'map-add'; readonly value: string }
/** `set map <file> <key> <value>` (key present) */
export interface MapSetOp extends MapOpBase { readonly kind: 'map-set'; readonly value: string }
/** `del map <file> <key>` */
export interface MapDelOp extends MapOpBase { readonly kind: 'map-del' }
/**
 * Rewrite the map file so a reload does not revert runtime map changes (notes §4).
 * `entries` is the full content the runtime map has after this plan's map ops, sorted.
 */
export interface WriteMapFileOp {
  readonly kind: 'write-map-file';
  readonly map: MapName;
  readonly entries: ReadonlyArray<readonly [key: string, value: string]>;
  readonly why: string;
}

interface BackendOpBase { readonly backend: string; readonly why: string }
/** `add backend <b> from <defaults>` (3.4+): a new service without a reload. */
export interface AddBackendOp extends BackendOpBase { readonly kind: 'add-backend'; readonly from: string }
/** `publish backend <b>`: after its servers, before its map entries. */
export interface PublishBackendOp extends BackendOpBase { readonly kind: 'publish-backend' }
/** `unpublish backend <b>`: after its map entries are gone, before its servers drain. */
export interface UnpublishBackendOp extends BackendOpBase { readonly kind: 'unpublish-backend' }
/** `del backend <b>`: after its last `del server`. */
export interface DelBackendOp extends BackendOpBase { readonly kind: 'del-backend' }

export type ServerOp = SetAddrOp | SetStateOp | SetWeightOp | SetHealthOp | AddServerOp | EnableHealthOp | DelServerOp;
export type MapOp = MapAddOp | MapSetOp | MapDelOp | WriteMapFileOp;
export type BackendOp = AddBackendOp | PublishBackendOp | UnpublishBackendOp | DelBackendOp;
export type Op = ServerOp | MapOp | BackendOp;
export type OpKind = Op['kind'];

export type ReloadReasonKind = 'service-added' | 'service-changed' | 'service-removed' | 'capacity' | 'static-lb-capacity';

export interface ReloadReason {
  readonly kind: ReloadReasonKind;
  readonly backend: string;
  readonly detail: string;
  /** true: reload now. false: ride along with the next reload. */
  readonly urgent: boolean;
}

export interface PlanContext {
  /** Current time in ms (any monotonic or wall clock, as long as it is consistent). */
  readonly now: number;
  /** A removed server is put to maint after this long in drain even with sessions left. */
  readonly drainTimeoutMs: number;
  /** Keep a newly activated server out of traffic until its checks pass (notes §1). */
  readonly holdUntilHealthy: boolean;
  /** From the previous plan's `drainStartedAt` (empty after a restart). Key `backend/server`. */
  readonly drainStartedAt: ReadonlyMap<string, number>;
  /**
   * The running HAProxy can add and delete backends at runtime (capability
   * `dynamicBackends`, and the running config has the daemon's current settings). Default false.
   */
  readonly dynamicBackends?: boolean;
  /** Backends the running config names in a rule (default_backend, use_backend ... if): never deleted at runtime. Default empty. */
  readonly staticRefs?: ReadonlySet<string>;
  /** Backends whose runtime creation HAProxy refused since the last reload: they wait for one. Default empty. */
  readonly runtimeRefused?: ReadonlySet<string>;
  /**
   * Plan only these backends (an incremental pass: the services that changed). Servers of
   * other backends are neither read nor touched, map entries are planned only where their
   * current or desired backend is in scope, and `drainStartedAt` of other backends is
   * carried over. Default: every backend (a full pass).
   */
  readonly scope?: ReadonlySet<string>;
}

export interface PlanSummary {
  /** Desired backends. */
  backends: number;
  /** Desired upstreams (deduplicated by address). */
  upstreams: number;
  /** Upstreams put into a template slot in this pass. */
  placed: number;
  /** Overflow servers added in this pass. */
  overflowAdded: number;
  /** Desired upstreams that have no server and got none (static LB backend out of slots). */
  unplaced: number;
  /** Servers made ready in this pass. */
  activated: number;
  /** Removals whose drain started in this pass. */
  drainsStarted: number;
  /** Removals still draining (waiting for sessions or timeout). */
  drainsWaiting: number;
  /** Removals whose drain start was deferred (make-before-break while new servers warm up). */
  drainsDeferred: number;
  /** Slots returned to the pool (maint + address cleared) in this pass. */
  slotsReturned: number;
  /** Overflow servers deleted in this pass. */
  overflowDeleted: number;
  /** Overflow servers waiting for their first passing check before going ready. */
  waitingForHealth: number;
  /** set-weight ops. */
  weightChanges: number;
  /** Requested state changes (desired drain/maint/ready of an existing upstream). */
  stateChanges: number;
  /** map-add/map-set/map-del ops. */
  mapChanges: number;
  /** Op count by kind. */
  opsByKind: Partial<Record<OpKind, number>>;
  /** Conflicts and values the runtime cannot apply (duplicate domains, static-LB weights, …). */
  warnings: string[];
}

/**
 * A server this plan activates but holds DOWN (`holdUntilHealthy`): with `--admission probe`
 * the daemon probes it and, on success, lets it in at once (src/admission).
 */
export interface AdmissionCandidate {
  readonly backend: string;
  readonly server: string;
  readonly upstreamId: string;
  readonly addr: string;
  readonly port: number;
  /** How it is held: `down` = ready but health down (slot); `maint` = overflow server waiting in maint. */
  readonly held: 'down' | 'maint';
  readonly probe: ProbeSpec;
}

export interface Plan {
  /** Runtime operations, to be applied in this order. */
  readonly ops: Op[];
  /** Servers held DOWN by this plan's ops, awaiting admission (empty without hold). */
  readonly admission: AdmissionCandidate[];
  readonly reasons: ReloadReason[];
  /** Some reason is urgent: render and reload after applying ops. */
  readonly reload: boolean;
  /** Template slot count per desired backend, for the next render. */
  readonly capacity: Map<string, number>;
  /** To hand back in the next PlanContext. */
  readonly drainStartedAt: Map<string, number>;
  /** Plan again soon even without a registry change (drains, health waits). */
  readonly pending: boolean;
  readonly summary: PlanSummary;
}
