/**
 * Reads what HAProxy is doing into the planner's ObservedState, in one Runtime API round
 * trip: servers state (addresses, admin flags), server stats (sessions, health), and the
 * two routing maps. Backend structure hashes come from the config HAProxy runs. The
 * shaping itself is the pure `observeState` of src/reconcile.
 */
import { observeState, type ObservedState } from '../reconcile/index.js';
import { RuntimeClient, showServersState, parseServersState, showStat, parseStat, showMap, parseMapEntries, type BatchResult } from '../runtime/index.js';
import { readAppliedStructure, type RenderSettings } from '../render/index.js';
import { NoSuchMapError } from '../errors.js';

export async function observe(runtime: RuntimeClient, settings: Pick<RenderSettings, 'hostsMap' | 'sniMap'>, appliedConfig: string): Promise<ObservedState> {
  const [state, stat, hosts, sni] = await runtime.batch([showServersState(), showStat(), showMap(settings.hostsMap), showMap(settings.sniMap)]);
  if (!state?.ok) throw state?.error ?? new Error('show servers state: no reply');
  if (!stat?.ok) throw stat?.error ?? new Error('show stat: no reply');
  return observeState({
    servers: parseServersState(state.reply),
    // Only the fields the planner reads: spreading 10 000 full rows was 0.3 s of a cold start.
    stats: parseStat(stat.reply).map((r) => ({ pxname: r.pxname, svname: r.svname, scur: r.scur ?? 0, qcur: r.qcur ?? 0, status: r.status, checkStatus: r.checkStatus })),
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
