/**
 * Builds the planner's ObservedState from parsed Runtime API replies. Pure. The row types
 * are structural (only the fields used here), so any parser yielding these names fits;
 * numeric fields may come as numbers or decimal strings.
 */

import { isSlotName } from './slots.js';
import type { ObservedBackend, ObservedServer, ObservedState } from './types.js';
import { adminIsMaint, adminIsDrain, CHK_ST_ENABLED, SRV_OP } from '../model.js';

// The admin flag meanings are part of the model; re-exported for the planner's callers.
export { adminIsMaint, adminIsDrain, CHK_ST_ENABLED };

type Num = number | string;

export interface ServerStateRowLike {
  readonly beName: string;
  readonly srvName: string;
  readonly srvAddr: string;
  readonly srvOpState: Num;
  readonly srvAdminState: Num;
  readonly srvUweight: Num;
  readonly srvPort: Num;
  readonly srvCheckState?: Num;
}

export interface StatRowLike {
  readonly pxname: string;
  readonly svname: string;
  /** null/absent (a proxy without the column): 0. */
  readonly scur: Num | null;
  readonly qcur: Num | null;
  readonly status: string;
  readonly checkStatus?: string;
}

export interface ObserveInput {
  readonly servers: Iterable<ServerStateRowLike>;
  /** `show stat` server rows (others are ignored). Missing row: scur/qcur 0, status ''. */
  readonly stats: Iterable<StatRowLike>;
  /** backend → `# structure <hash>` of the running config (null/absent: none). */
  readonly structureHashes: ReadonlyMap<string, string | null>;
  readonly hostsMap: ReadonlyMap<string, string>;
  readonly sniMap: ReadonlyMap<string, string>;
}

function num(v: Num | null | undefined, dflt = 0): number {
  if (v === undefined || v === null || v === '') return dflt;
  const n = typeof v === 'number' ? v : Number(v);
  return Number.isFinite(n) ? n : dflt;
}

export function observeState(input: ObserveInput): ObservedState {
  const stats = new Map<string, StatRowLike>();
  for (const r of input.stats) {
    if (r.svname === 'FRONTEND' || r.svname === 'BACKEND') continue;
    stats.set(`${r.pxname}/${r.svname}`, r);
  }
  const servers = new Map<string, ObservedServer[]>();
  for (const r of input.servers) {
    const st = stats.get(`${r.beName}/${r.srvName}`);
    const admin = num(r.srvAdminState);
    const s: ObservedServer = {
      backend: r.beName,
      name: r.srvName,
      addr: r.srvAddr,
      port: num(r.srvPort),
      maint: adminIsMaint(admin),
      drain: adminIsDrain(admin),
      up: num(r.srvOpState) === SRV_OP.RUNNING,
      weight: num(r.srvUweight, 1),
      scur: num(st?.scur),
      qcur: num(st?.qcur),
      status: st?.status ?? '',
      checkStatus: st?.checkStatus ?? '',
      dynamic: !isSlotName(r.srvName),
      ...(r.srvCheckState === undefined ? {} : { checkEnabled: (num(r.srvCheckState) & CHK_ST_ENABLED) !== 0 }),
    };
    const list = servers.get(r.beName);
    if (list) list.push(s);
    else servers.set(r.beName, [s]);
  }
  const names = new Set([...servers.keys(), ...input.structureHashes.keys()]);
  const backends = new Map<string, ObservedBackend>();
  for (const name of [...names].sort()) {
    const list = servers.get(name) ?? [];
    backends.set(name, {
      name,
      servers: list,
      templateSlots: list.filter((s) => !s.dynamic).length,
      structureHash: input.structureHashes.get(name) ?? null,
    });
  }
  return { backends, hostsMap: input.hostsMap, sniMap: input.sniMap };
}
