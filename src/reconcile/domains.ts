/**
 * Desired content of the hosts and sni maps. Pure; the one owner of the map rule, used by
 * the planner (runtime map ops) and the renderer (map files at reload), so both agree.
 */

import { backendName, type Registry } from '../model.js';
import type { MapName } from './types.js';

export interface DomainConflict {
  readonly map: MapName;
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
 * Each map routes a domain to one service: when several services of the same map claim a
 * domain, the lexicographically first service name wins (deterministic, independent of
 * etcd order), the others are reported in
 * `conflicts`. The two maps are separate routing tables (sni: passthrough on the TLS
 * port, hosts: Host header), so one passthrough and one plain http service may share a
 * domain.
 */
export function desiredMaps(registry: Registry): DesiredMaps {
  const claims = { hosts: new Map<string, string[]>(), sni: new Map<string, string[]>() };
  for (const name of [...registry.http.keys()].sort()) {
    const svc = registry.http.get(name);
    if (!svc) continue;
    const m = claims[svc.sslPassthrough ? 'sni' : 'hosts'];
    for (const d of svc.domains) {
      const list = m.get(d);
      if (list) list.push(name);
      else m.set(d, [name]);
    }
  }
  const out = { hosts: new Map<string, string>(), sni: new Map<string, string>() };
  const conflicts: DomainConflict[] = [];
  for (const map of MAP_NAMES) {
    for (const domain of [...claims[map].keys()].sort()) {
      const [winner, ...losers] = claims[map].get(domain) ?? [];
      const svc = winner === undefined ? undefined : registry.http.get(winner);
      if (!svc || winner === undefined) continue;
      out[map].set(domain, backendName(svc));
      if (losers.length > 0) conflicts.push({ map, domain, winner, losers });
    }
  }
  return { ...out, conflicts };
}

export const MAP_NAMES: readonly MapName[] = ['hosts', 'sni'];
