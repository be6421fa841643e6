/**
 * Reads what HAProxy is doing into the planner's ObservedState, in one Runtime API round
 * trip: servers state (addresses, admin flags), server stats (sessions, health), and the
 * two routing maps. Backend structure hashes come from the config HAProxy runs.
 */
import type { ObservedBackend, ObservedServer, ObservedState } from './reconcile/index.js';
import { RuntimeClient, showServersState, parseServersState, showStat, parseStat, showMap, parseMapEntries, isMaint, isDrain, SRV_OP } from './runtime/index.js';
import { readAppliedStructure, type RenderSettings } from './render/index.js';
import { SLOT_PREFIX } from './model.js';
import { NoSuchMapError } from './errors.js';

const SLOT_RE = new RegExp(`^${SLOT_PREFIX}\\d+$`);

export async function observe(runtime: RuntimeClient, settings: Pick<RenderSettings, 'hostsMap' | 'sniMap'>, appliedConfig: string): Promise<ObservedState> {
  const [state, stat, hosts, sni] = await runtime.batch([showServersState(), showStat(), showMap(settings.hostsMap), showMap(settings.sniMap)]);
  if (!state?.ok) throw state?.error ?? new Error('show servers state: no reply');
  if (!stat?.ok) throw stat?.error ?? new Error('show stat: no reply');
  const stats = new Map<string, { scur: number; qcur: number; status: string; checkStatus: string }>();
  for (const row of parseStat(stat.reply)) {
    stats.set(`${row.pxname}/${row.svname}`, { scur: row.scur ?? 0, qcur: row.qcur ?? 0, status: row.status ?? '', checkStatus: row.checkStatus ?? '' });
  }
  const structure = readAppliedStructure(appliedConfig);
  const backends = new Map<string, { servers: ObservedServer[] }>();
  for (const name of structure.keys()) backends.set(name, { servers: [] });
  for (const row of parseServersState(state.reply)) {
    const st = stats.get(`${row.beName}/${row.srvName}`);
    const server: ObservedServer = {
      backend: row.beName,
      name: row.srvName,
      addr: row.srvAddr,
      port: row.srvPort,
      // CMAINT stays set on a ready slot (it was declared `disabled`): isMaint knows.
      maint: isMaint(row),
      drain: isDrain(row),
      up: row.srvOpState === SRV_OP.RUNNING,
      weight: row.srvUweight,
      scur: st?.scur ?? 0,
      qcur: st?.qcur ?? 0,
      status: st?.status ?? '',
      checkStatus: st?.checkStatus ?? '',
      dynamic: !SLOT_RE.test(row.srvName),
    };
    let be = backends.get(row.beName);
    if (!be) backends.set(row.beName, (be = { servers: [] }));
    be.servers.push(server);
  }
  const out = new Map<string, ObservedBackend>();
  for (const [name, be] of backends) {
    out.set(name, {
      name,
      servers: be.servers,
      templateSlots: be.servers.filter((s) => !s.dynamic).length,
      structureHash: structure.get(name) ?? null,
    });
  }
  return { backends: out, hostsMap: mapOf(hosts, settings.hostsMap), sniMap: mapOf(sni, settings.sniMap) };
}

function mapOf(result: Awaited<ReturnType<RuntimeClient['batch']>>[number] | undefined, file: string): Map<string, string> {
  if (!result) throw new Error(`show map ${file}: no reply`);
  // A config without that map (e.g. no HTTPS frontend) simply has no entries.
  if (!result.ok) {
    if (result.error instanceof NoSuchMapError) return new Map();
    throw result.error;
  }
  return new Map(parseMapEntries(result.reply).map((e) => [e.key, e.value]));
}
