/**
 * Plans in words: each op as (roughly) the Runtime API command it becomes, and the lines
 * the `plan` command prints and the logs carry. Pure.
 */
import { formatAddrPort as fmtAddr } from '../model.js';
import type { MapName, Op, Plan } from './types.js';

function mapRef(map: MapName): string {
  return `<${map}.map>`;
}

/** One op as (roughly) the Runtime API command it becomes. */
export function describeOp(o: Op): string {
  switch (o.kind) {
    case 'set-addr':
      return `set server ${o.backend}/${o.server} addr ${o.addr} port ${o.port}`;
    case 'set-state':
      return `set server ${o.backend}/${o.server} state ${o.state}`;
    case 'set-weight':
      return `set server ${o.backend}/${o.server} weight ${o.weight}`;
    case 'set-health':
      return `set server ${o.backend}/${o.server} health ${o.health}`;
    case 'add-server':
      return `add server ${o.backend}/${o.server} ${fmtAddr(o.addr, o.port)} weight ${o.weight}${o.maxconn === null ? '' : ` maxconn ${o.maxconn}`} check`;
    case 'enable-health':
      return `enable health ${o.backend}/${o.server}`;
    case 'del-server':
      return `del server ${o.backend}/${o.server}`;
    case 'map-add':
      return `add map ${mapRef(o.map)} ${o.key} ${o.value}`;
    case 'map-set':
      return `set map ${mapRef(o.map)} ${o.key} ${o.value}`;
    case 'map-del':
      return `del map ${mapRef(o.map)} ${o.key}`;
    case 'write-map-file':
      return `write ${mapRef(o.map)} (${o.entries.length} entries)`;
    case 'add-backend':
      return `add backend ${o.backend} from ${o.from}`;
    case 'publish-backend':
      return `publish backend ${o.backend}`;
    case 'unpublish-backend':
      return `unpublish backend ${o.backend}`;
    case 'del-backend':
      return `del backend ${o.backend}`;
  }
}

/** Human-readable lines for logs and the `plan` command. */
export function describePlan(pl: Plan): string[] {
  const lines: string[] = [];
  const urgent = pl.reasons.filter((r) => r.urgent);
  if (pl.reload) lines.push(`reload: now (${urgent.map((r) => `${r.kind} ${r.backend}`).join(', ')})`);
  else if (pl.reasons.length > 0) lines.push(`reload: with the next one (${pl.reasons.length} deferred reason(s))`);
  else lines.push('reload: not needed');
  for (const r of pl.reasons) lines.push(`reason ${r.urgent ? '[urgent] ' : ''}${r.kind} ${r.backend}: ${r.detail}`);
  if (pl.ops.length === 0) lines.push('runtime: nothing to do');
  for (const o of pl.ops) lines.push(`op ${describeOp(o)}  # ${o.why}`);
  const s = pl.summary;
  const counts = (
    [
      ['placed', s.placed],
      ['overflow added', s.overflowAdded],
      ['unplaced', s.unplaced],
      ['activated', s.activated],
      ['drains started', s.drainsStarted],
      ['draining', s.drainsWaiting],
      ['drains deferred', s.drainsDeferred],
      ['slots returned', s.slotsReturned],
      ['overflow deleted', s.overflowDeleted],
      ['waiting for health', s.waitingForHealth],
      ['weight changes', s.weightChanges],
      ['state changes', s.stateChanges],
      ['map changes', s.mapChanges],
    ] as const
  )
    .filter(([, n]) => n > 0)
    .map(([k, n]) => `${k} ${n}`);
  lines.push(`summary: ${s.backends} backend(s), ${s.upstreams} upstream(s)${counts.length ? `; ${counts.join(', ')}` : ''}`);
  lines.push(`capacity: ${[...pl.capacity].map(([b, n]) => `${b}=${n}`).join(' ') || '(none)'}`);
  if (pl.pending) lines.push('pending: yes (plan again shortly)');
  for (const w of s.warnings) lines.push(`warning: ${w}`);
  return lines;
}
