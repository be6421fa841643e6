/**
 * Desired content of the hosts and sni maps. Pure; shared by the planner (runtime map
 * ops) and usable by the renderer (map files at reload), so both agree on conflicts.
 */

import { backendName, type Registry } from '../model.js';
import type { MapName } from './types.js';

export interface DomainConflict {
  readonly domain: string;
  /** Service whose claim is applied (lexicographically first name). */
  readonly winner: string;
  /** Services whose claim is ignored. */
  readonly losers: readonly string[];
}

export interface DesiredMaps {
  /** domain → `http-<svc>` for http services without TLS passthrough. */
  readonly hosts: Map<string, string>;
  /** domain → `tls-<svc>` for passthrough services. */
  readonly sni: Map<string, string>;
  readonly conflicts: DomainConflict[];
}

/**
 * A domain belongs to exactly one service across both maps: when several http services
 * claim it, the lexicographically first service name wins (deterministic, independent of
 * etcd order), the others are reported in `conflicts`.
 */
export function desiredMaps(registry: Registry): DesiredMaps {
  const claims = new Map<string, string[]>();
  const names = [...registry.http.keys()].sort();
  for (const name of names) {
    const svc = registry.http.get(name);
    if (!svc) continue;
    for (const d of svc.domains) {
      const list = claims.get(d);
      if (list) list.push(name);
      else claims.set(d, [name]);
    }
  }
  const hosts = new Map<string, string>();
  const sni = new Map<string, string>();
  const conflicts: DomainConflict[] = [];
  for (const domain of [...claims.keys()].sort()) {
    const [winner, ...losers] = claims.get(domain) ?? [];
    if (winner === undefined) continue;
    const svc = registry.http.get(winner);
    if (!svc) continue;
    (svc.sslPassthrough ? sni : hosts).set(domain, backendName(svc));
    if (losers.length > 0) conflicts.push({ domain, winner, losers });
  }
  return { hosts, sni, conflicts };
}

export const MAP_NAMES: readonly MapName[] = ['hosts', 'sni'];
