/**
 * Reads what HAProxy is doing into the planner's ObservedState, in one Runtime API round
 * trip: servers state (addresses, admin flags), server stats (sessions, health), and the
 * two routing maps. Backend structure hashes come from the config HAProxy runs. The
 * shaping itself is the pure `observeState` of src/reconcile.
 */
import { observeState, type ObservedBackend, type ObservedState } from '../reconcile/index.js';
import {
  RuntimeClient,
  showServersState,
  parseServersState,
  showStat,
  parseStat,
  showMap,
  parseMapEntries,
  STAT_TYPE,
  type BatchResult,
  type ServerStateRow,
  type StatRow,
} from '../runtime/index.js';
import { readAppliedStructure, type RenderSettings } from '../render/index.js';
import { NoSuchMapError } from '../errors.js';

export async function observe(runtime: RuntimeClient, settings: Pick<RenderSettings, 'hostsMap' | 'sniMap'>, appliedConfig: string): Promise<ObservedState> {
  const [state, stat, hosts, sni] = await runtime.batch([showServersState(), showStat(), showMap(settings.hostsMap), showMap(settings.sniMap)]);
  if (!state?.ok) throw state?.error ?? new Error('show servers state: no reply');
  if (!stat?.ok) throw stat?.error ?? new Error('show stat: no reply');
  return observeState({
    servers: parseServersState(state.reply),
    // Only the fields the planner reads, as plain values: the parsed rows point into the reply.
    stats: parseStat(stat.reply).map((r) => ({ pxname: r.pxname, svname: r.svname, scur: r.scur, qcur: r.qcur, status: r.status, checkStatus: r.checkStatus })),
    hostsMap: mapOf(hosts, settings.hostsMap),
    sniMap: mapOf(sni, settings.sniMap),
    structureHashes: readAppliedStructure(appliedConfig),
  });
}

function mapOf(result: BatchResult | undefined, file: string): Map<string, string> {
  if (!result) throw new Error(`show map ${file}: no reply`);
  // A config without that map (e.g. no HTTPS frontend) simply has no entries.
  if (!result.ok) {
    if (result.error instanceof NoSuchMapError) return new Map();
    throw result.error;
  }
  return new Map(parseMapEntries(result.reply).map((e) => [e.key, e.value]));
}

/**
 * An incremental read: `show servers state <backend>` and `show stat <backend> 4 -1` of
 * these backends only (their structure hashes from the model). Throws on any refused read.
 */
export async function observeBackends(runtime: RuntimeClient, backends: readonly string[], structureHash: (backend: string) => string | null): Promise<ReadonlyMap<string, ObservedBackend>> {
  if (backends.length === 0) return new Map();
  const replies = await runtime.batch(backends.flatMap((be) => [showServersState(be), showStat(be, STAT_TYPE.SERVER)]));
  const servers: ServerStateRow[] = [];
  const stats: StatRow[] = [];
  replies.forEach((r, i) => {
    if (!r.ok) throw r.error;
    if (i % 2 === 0) servers.push(...parseServersState(r.reply));
    else stats.push(...parseStat(r.reply));
  });
  const observed = observeState({
    servers,
    stats,
    hostsMap: new Map(),
    sniMap: new Map(),
    structureHashes: new Map(backends.map((be) => [be, structureHash(be)])),
  });
  return observed.backends;
}
