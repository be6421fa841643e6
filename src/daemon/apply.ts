/**
 * Applies planned operations: each Op becomes one validated Runtime API command, all sent
 * in one batch (in plan order, on one connection per chunk); map-file rewrites (the planner's
 * `write-map-file` entries) happen after the map commands so that a reload never reverts a
 * runtime map change.
 */
import type { Op } from '../reconcile/index.js';
import type { Command } from '../runtime/index.js';
import {
  RuntimeClient,
  setServerAddr,
  setServerState,
  setServerWeight,
  setServerHealth,
  addServer,
  enableHealth,
  delServer,
  waitSrvRemovable,
  addMap,
  setMap,
  delMap,
  addBackend,
  publishBackend,
  unpublishBackend,
  delBackend,
} from '../runtime/index.js';
import { mapFileText, checkTiming, type RenderSettings } from '../render/index.js';
import { readFile } from 'node:fs/promises';
import { atomicWrite } from '../reload/index.js';
import { logger } from '../log.js';

const log = logger('apply');

export interface ApplyResult {
  op: Op;
  family: string;
  ok: boolean;
  code: string;
  message?: string;
}

function mapFile(map: 'hosts' | 'sni', settings: Pick<RenderSettings, 'hostsMap' | 'sniMap'>): string {
  return map === 'hosts' ? settings.hostsMap : settings.sniMap;
}

function toCommand(op: Op, settings: Pick<RenderSettings, 'hostsMap' | 'sniMap' | 'checkInterMs'>): Command | null {
  switch (op.kind) {
    case 'set-addr':
      return setServerAddr(op.backend, op.server, op.addr, op.port);
    case 'set-state':
      return setServerState(op.backend, op.server, op.state);
    case 'set-weight':
      return setServerWeight(op.backend, op.server, op.weight);
    case 'set-health':
      return setServerHealth(op.backend, op.server, op.health);
    case 'add-server': {
      // `default-server` does not reach servers added at runtime: give them the slots' timing.
      const t = checkTiming(settings.checkInterMs);
      return addServer(op.backend, op.server, {
        addr: op.addr,
        port: op.port,
        weight: op.weight,
        check: true,
        inter: t.interMs,
        fastinter: t.fastinterMs,
        downinter: t.downinterMs,
        rise: t.rise,
        fall: t.fall,
        ...(op.maxconn === null || op.maxconn === undefined ? {} : { maxconn: op.maxconn }),
      });
    }
    case 'enable-health':
      return enableHealth(op.backend, op.server);
    case 'del-server':
      return delServer(op.backend, op.server);
    case 'map-add':
      return addMap(mapFile(op.map, settings), op.key, op.value);
    case 'map-set':
      return setMap(mapFile(op.map, settings), op.key, op.value);
    case 'map-del':
      return delMap(mapFile(op.map, settings), op.key);
    case 'write-map-file':
      return null;
    case 'add-backend':
      return addBackend(op.backend, op.from);
    case 'publish-backend':
      return publishBackend(op.backend);
    case 'unpublish-backend':
      return unpublishBackend(op.backend);
    case 'del-backend':
      return delBackend(op.backend);
  }
}

export interface ApplyOptions {
  /** Capability `waitSrvRemovable` of the running HAProxy: `wait srv-removable` before each `del server`. Default false. */
  waitSrvRemovable?: boolean;
}

/** Bound of one `wait srv-removable`: the planner only deletes idle servers, so this is rarely reached. */
const SRV_REMOVABLE_WAIT_MS = 1000;

export async function applyOps(
  runtime: RuntimeClient,
  ops: readonly Op[],
  settings: Pick<RenderSettings, 'hostsMap' | 'sniMap' | 'checkInterMs'>,
  opts: ApplyOptions = {},
): Promise<ApplyResult[]> {
  const results: ApplyResult[] = [];
  const commands: Command[] = [];
  const cmdOps: Op[] = [];
  const families: string[] = [];
  const fileWrites: Op[] = [];
  for (const op of ops) {
    if (op.kind === 'write-map-file') {
      fileWrites.push(op);
      continue;
    }
    try {
      const cmd = toCommand(op, settings);
      if (cmd && op.kind === 'del-server' && opts.waitSrvRemovable) {
        // Reported as its own family; a `Failed.` here makes the `del server` after it fail too.
        commands.push(waitSrvRemovable(op.backend, op.server, SRV_REMOVABLE_WAIT_MS));
        cmdOps.push(op);
        families.push('wait-srv-removable');
      }
      if (cmd) {
        commands.push(cmd);
        cmdOps.push(op);
        families.push(op.kind);
      }
    } catch (err) {
      // A value that fails validation here never reaches the socket; report it.
      const e = err as { code?: string; message?: string };
      log.error({ err, op }, 'operation refused before sending');
      results.push({ op, family: op.kind, ok: false, code: e.code ?? 'E_INVALID_ARGUMENT', message: e.message });
    }
  }
  if (commands.length) {
    const replies = await runtime.batch(commands);
    replies.forEach((r, i) => {
      const op = cmdOps[i]!;
      const family = families[i]!;
      if (r.ok) results.push({ op, family, ok: true, code: 'ok' });
      else {
        log.warn({ err: r.error, op }, 'runtime command failed');
        results.push({ op, family, ok: false, code: r.error.code, message: r.error.message });
      }
    });
  }
  for (const op of fileWrites) {
    if (op.kind !== 'write-map-file') continue;
    // The entries the planner computed: the file holds what the runtime map now holds.
    await atomicWrite(mapFile(op.map, settings), mapFileText(op.entries));
    results.push({ op, family: op.kind, ok: true, code: 'ok' });
  }
  return results;
}

/**
 * Verify pass: each map file the running config loads holds what HAProxy's runtime map holds
 * (converged, that is the desired routing), so a reload or a HAProxy restarted by anyone keeps
 * today's routes. A file left behind by ENOSPC, a kill between `add map` and the file write,
 * or an edit behind the updater's back is rewritten. Returns the files rewritten.
 */
export async function repairMapFiles(
  runtimeMaps: { hostsMap: ReadonlyMap<string, string>; sniMap: ReadonlyMap<string, string> },
  settings: Pick<RenderSettings, 'hostsMap' | 'sniMap'>,
  appliedConfig: string,
): Promise<string[]> {
  const rewritten: string[] = [];
  for (const map of ['hosts', 'sni'] as const) {
    const file = mapFile(map, settings);
    // A map the running config does not load (no HTTPS frontend) has no runtime side to compare.
    if (!appliedConfig.includes(file)) continue;
    const entries = map === 'hosts' ? runtimeMaps.hostsMap : runtimeMaps.sniMap;
    const want = mapFileText([...entries].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
    const have = await readFile(file, 'utf8').catch(() => null);
    if (have === want) continue;
    await atomicWrite(file, want);
    rewritten.push(file);
    log.warn({ file, entries: entries.size }, 'map file differed from the running map; rewritten');
  }
  return rewritten;
}
