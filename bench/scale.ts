/**
 * 5. Scale.
 * - Cold start: `scaleServices` http services x `scaleUpstreams` upstreams are put into
 *   etcd first; then the daemon starts (no HAProxy running, empty state dir) and the clock
 *   runs from its spawn until `show servers state` shows every upstream with its address and
 *   out of maintenance. The upstreams point at closed loopback ports (127.3.x.y:19001..),
 *   so their health checks fail at once (RST) instead of 20 000 checks/s hammering a few
 *   Node servers: the figure is the daemon's sync, not health. RSS: VmRSS of the updater's
 *   Node process (and of HAProxy's worker) after the sync.
 * - New service at scale: one more service (one live upstream) → time until it routes,
 *   i.e. one structural reload of the whole config.
 * - Growth: on a separate daemon, one backend grows from 1 to `growTo` upstreams (one put
 *   every `growGapMs`, each a live backend): HAProxy reloads counted from its master CLI,
 *   once with the default --consolidate-after (60 s) and once shortened.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseDuration } from '../src/config.js';
import { execFileP, sleep, startBackend, type Backend } from '../testkit/index.js';

import { countLive, httpGet, log, putMany, rssMiB, serversState, until, viewOf } from './lib.js';
import { startDaemon, type Ctx, type Daemon } from './setup.js';

export interface GrowthResult {
  to: number;
  consolidateAfter: string;
  growthS: number;
  allConfiguredS: number | null;
  allUpS: number | null;
  reloadsDuringGrowth: number;
  /** Including the consolidation after growth, when waited for. */
  reloadsTotal: number;
  waitedForConsolidationS: number;
  slotsAtEnd: number;
  overflowAtEnd: number;
}

export interface ScaleResult {
  services: number;
  upstreamsPer: number;
  populateS: number;
  coldStartS: number | null;
  readyS: number | null;
  haproxyUpS: number | null;
  updaterRssMiB: number | null;
  haproxyWorkerRssMiB: number | null;
  reloadsDuringColdStart: number | null;
  newServiceS: number | null;
  /** HAProxy reloads (master CLI) from the new service's put to its routing: 0 on 3.4+ (add backend at runtime), 1 before. */
  newServiceReloads: number;
  /**
   * Where the new service's time went, from the updater's `haproxy_updater_reload_phase_seconds`
   * (sums over the reloads it caused): render of haproxy.cfg, write + `haproxy -c`, guarded
   * master reload. Null when it needed no reload (3.4+) or the metric was unreadable.
   */
  newServiceSplit: { renderMs: number; checkMs: number; reloadMs: number } | null;
  growth: GrowthResult[];
  /** The same cold start and new service on a second HAProxy (`--compare-haproxy-bin`), side by side. */
  compare?: { haproxy: string; haproxyBin: string; coldStartS: number | null; newServiceS: number | null; newServiceReloads: number };
}

export async function scale(ctx: Ctx): Promise<ScaleResult> {
  const cold = await coldStart(ctx);
  const growth: GrowthResult[] = [];
  const backends = await Promise.all(Array.from({ length: ctx.args.growTo }, (_, i) => startBackend(`g${i}`)));
  try {
    growth.push(await grow(ctx, backends, 'default', null));
    growth.push(await grow(ctx, backends, 'short', ctx.args.growConsolidate));
  } finally {
    await Promise.all(backends.map((b) => b.close()));
  }
  const compare = await compareOn(ctx);
  return { ...cold, growth, ...(compare ? { compare } : {}) };
}

/** The 3.4 executable from scripts/haproxy-versions.sh (downloaded once, then cached). */
async function versionsBin(name: string): Promise<string> {
  const script = fileURLToPath(new URL('../scripts/haproxy-versions.sh', import.meta.url));
  const { stdout } = await execFileP('bash', [script], { maxBuffer: 1 << 20 });
  const line = stdout.split('\n').find((l) => l.startsWith(`${name}=`));
  if (!line) throw new Error(`scripts/haproxy-versions.sh printed no ${name}`);
  return line.slice(name.length + 1);
}

/** Cold start + new service once more on another HAProxy: testkit reads HAPROXY_BIN at each start. */
async function compareOn(ctx: Ctx): Promise<ScaleResult['compare'] | null> {
  const wanted = ctx.args.compareHaproxyBin;
  if (!wanted) return null;
  const bin = wanted === 'auto' ? await versionsBin('HAPROXY_BIN_3_4') : wanted;
  const haproxy = /version (\S+)/.exec((await execFileP(bin, ['-v'])).stdout)?.[1] ?? 'unknown';
  const saved = process.env.HAPROXY_BIN;
  process.env.HAPROXY_BIN = bin;
  try {
    log(`scale: again on HAProxy ${haproxy} (${bin})`);
    const r = await coldStart(ctx);
    return { haproxy, haproxyBin: bin, coldStartS: r.coldStartS, newServiceS: r.newServiceS, newServiceReloads: r.newServiceReloads };
  } finally {
    if (saved === undefined) delete process.env.HAPROXY_BIN;
    else process.env.HAPROXY_BIN = saved;
  }
}

async function coldStart(ctx: Ctx): Promise<Omit<ScaleResult, 'growth'>> {
  const { client, args } = ctx;
  const prefix = '/bench/scale';
  const S = args.scaleServices;
  const U = args.scaleUpstreams;
  const name = (s: number) => `s${String(s).padStart(4, '0')}`;
  const entries: Array<[string, string]> = [];
  for (let s = 0; s < S; s++) {
    entries.push([`${prefix}/http-services/${name(s)}/domain`, `${name(s)}.scale.test`]);
    for (let j = 0; j < U; j++) entries.push([`${prefix}/http-services/${name(s)}/upstreams/u${j}`, `127.3.${s >> 8}.${s & 255}:${19001 + j}`]);
  }
  let t = Date.now();
  await putMany(client, entries, 64);
  const populateS = (Date.now() - t) / 1000;
  log(`scale: ${entries.length} keys put in ${populateS.toFixed(1)} s`);

  const re = /^http-s\d{4}$/;
  const total = S * U;
  const live = await startBackend('scale-new');
  t = Date.now();
  const d = await startDaemon(ctx, prefix, [], { waitReady: false });
  try {
    let readyS: number | null = null;
    let haproxyUpS: number | null = null;
    let coldStartS: number | null = null;
    let last = 0;
    await until(
      async () => {
        if (d.u.proc.child.exitCode !== null) throw new Error(`updater exited: ${d.u.proc.output.slice(-10).join('\n')}`);
        if (readyS === null && (await d.u.get('/readyz').catch(() => ({ status: 0 }))).status === 200) readyS = (Date.now() - t) / 1000;
        if (!existsSync(d.u.adminSocket)) return false;
        const c = countLive(await serversState(d.u.adminSocket), re);
        if (haproxyUpS === null) haproxyUpS = (Date.now() - t) / 1000;
        if (c.configured - last >= total / 10) {
          last = c.configured;
          log(`scale: ${c.configured}/${total} upstreams in HAProxy after ${((Date.now() - t) / 1000).toFixed(1)} s`);
        }
        if (c.configured >= total) coldStartS = (Date.now() - t) / 1000;
        return coldStartS !== null;
      },
      240_000,
      100,
    );
    if (readyS === null) await until(async () => (await d.u.get('/readyz')).status === 200, 30_000, 100).then((ok) => ok && (readyS = (Date.now() - t) / 1000));
    log(`scale: cold start ${coldStartS} s (haproxy up ${haproxyUpS} s, ready ${readyS} s)`);
    await sleep(1000);
    const updaterRssMiB = await rssMiB(d.u.proc.pid);
    const view = await viewOf(d.u.masterSocket);
    const haproxyWorkerRssMiB = view.workers[0] ? await rssMiB(view.workers[0]) : null;

    // One structural change at this size: a new service, put → routed.
    const reloadsBefore = (await viewOf(d.u.masterSocket)).reloads;
    const phasesBefore = await reloadPhases(d);
    const t1 = Date.now();
    await client.put(`${prefix}/http-services/znew/domain`).value('znew.scale.test');
    await client.put(`${prefix}/http-services/znew/upstreams/a`).value(`127.0.0.1:${live.port}`);
    const routed = await until(async () => (await httpGet(d.u.httpPort, 'znew.scale.test')) === 'scale-new', 120_000, 20);
    const newServiceS = routed ? (Date.now() - t1) / 1000 : null;
    const newServiceReloads = (await viewOf(d.u.masterSocket)).reloads - reloadsBefore;
    const phasesAfter = await reloadPhases(d);
    const split = (p: string) => Math.round(((phasesAfter?.[p] ?? 0) - (phasesBefore?.[p] ?? 0)) * 1000);
    const newServiceSplit = newServiceReloads > 0 && phasesAfter ? { renderMs: split('render'), checkMs: split('check'), reloadMs: split('reload') } : null;
    log(`scale: new service routed after ${newServiceS} s, ${newServiceReloads} reload(s)${newServiceSplit ? `, render ${newServiceSplit.renderMs} ms, check ${newServiceSplit.checkMs} ms, reload ${newServiceSplit.reloadMs} ms` : ''}`);
    return {
      services: S,
      upstreamsPer: U,
      populateS,
      coldStartS,
      readyS,
      haproxyUpS,
      updaterRssMiB,
      haproxyWorkerRssMiB,
      reloadsDuringColdStart: view.reloads,
      newServiceS,
      newServiceReloads,
      newServiceSplit,
    };
  } finally {
    await d.close();
    await live.close();
    await client.delete().prefix(`${prefix}/`).exec();
  }
}

/** Sums of the updater's reload phase histogram, in seconds by phase (null: /metrics unreadable). */
async function reloadPhases(d: Daemon): Promise<Record<string, number> | null> {
  const r = await d.u.get('/metrics').catch(() => null);
  if (!r || r.status !== 200) return null;
  const out: Record<string, number> = {};
  for (const m of r.body.matchAll(/^haproxy_updater_reload_phase_seconds_sum\{phase="(\w+)"\} (\S+)$/gm)) out[m[1]!] = Number(m[2]);
  return out;
}

async function grow(ctx: Ctx, backends: Backend[], tag: string, consolidateAfter: string | null): Promise<GrowthResult> {
  const { client, args } = ctx;
  const prefix = `/bench/grow-${tag}`;
  const key = (id: string) => `${prefix}/http-services/grow/${id}`;
  const id = (i: number) => `u${String(i).padStart(3, '0')}`;
  await client.put(key('domain')).value('grow.test');
  await client.put(key(`upstreams/${id(0)}`)).value(`127.0.0.1:${backends[0]!.port}`);
  const d = await startDaemon(ctx, prefix, consolidateAfter ? ['--consolidate-after', consolidateAfter] : []);
  try {
    if (!(await until(async () => (await httpGet(d.u.httpPort, 'grow.test')) === 'g0', 20_000, 50))) throw new Error('grow.test never routed');
    const before = await viewOf(d.u.masterSocket);
    const re = /^http-grow$/;
    const t0 = Date.now();
    for (let i = 1; i < args.growTo; i++) {
      await client.put(key(`upstreams/${id(i)}`)).value(`127.0.0.1:${backends[i]!.port}`);
      if (args.growGapMs) await sleep(args.growGapMs);
    }
    const growthS = (Date.now() - t0) / 1000;
    let allConfiguredS: number | null = null;
    let allUpS: number | null = null;
    await until(
      async () => {
        const c = countLive(await serversState(d.u.adminSocket), re);
        if (allConfiguredS === null && c.configured >= args.growTo) allConfiguredS = (Date.now() - t0) / 1000;
        if (allUpS === null && c.up >= args.growTo) allUpS = (Date.now() - t0) / 1000;
        return allUpS !== null;
      },
      60_000,
      50,
    );
    await sleep(1000);
    const mid = await viewOf(d.u.masterSocket);
    const reloadsDuringGrowth = mid.reloads - before.reloads;
    log(`grow ${tag}: ${args.growTo} configured after ${allConfiguredS} s, UP after ${allUpS} s, ${reloadsDuringGrowth} reloads`);
    // Consolidation: the reload that turns overflow servers into template slots.
    const waitMs = (consolidateAfter ? parseDuration(consolidateAfter) ?? 0 : 60_000) + 8000;
    let waited = 0;
    if (consolidateAfter || args.waitConsolidation) {
      const w0 = Date.now();
      log(`grow ${tag}: waiting up to ${Math.round(waitMs / 1000)} s for the consolidation reload`);
      await until(
        async () => {
          const rows = (await serversState(d.u.adminSocket)).filter((r) => re.test(r.beName));
          return rows.every((r) => !/^x\d+$/.test(r.srvName)) && countLive(rows, re).configured >= args.growTo;
        },
        waitMs,
        200,
      );
      await sleep(1500);
      waited = (Date.now() - w0) / 1000;
    }
    const end = await viewOf(d.u.masterSocket);
    const rows = (await serversState(d.u.adminSocket)).filter((r) => re.test(r.beName));
    return {
      to: args.growTo,
      consolidateAfter: consolidateAfter ?? '60s (default)',
      growthS,
      allConfiguredS,
      allUpS,
      reloadsDuringGrowth,
      reloadsTotal: end.reloads - before.reloads,
      waitedForConsolidationS: waited,
      slotsAtEnd: rows.filter((r) => /^s\d+$/.test(r.srvName)).length,
      overflowAtEnd: rows.filter((r) => /^x\d+$/.test(r.srvName)).length,
    };
  } finally {
    await d.close();
    await client.delete().prefix(`${prefix}/`).exec();
  }
}

