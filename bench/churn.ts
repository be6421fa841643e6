/**
 * 2. Churn under load: a steady open-loop load (a new TCP connection per request) to a
 * service with 3 stable upstreams while `churnChanges` add/remove changes run: upstream
 * `t<i>` is put (pointing at one of 8 pool backends, round robin), deleted 20 ms later,
 * and the next one follows 20 ms after that. The service has the default options (4 slots),
 * so additions beyond the free slots go to overflow servers. Every upstream stays alive:
 * a failed request is the updater's (or the reload's) doing, not a dead upstream's.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { RuntimeClient, parseServersState, showServersState, type ServerStateRow } from '../src/runtime/index.js';
import { sleep, slotUse, startBackend } from '../testkit/index.js';
import { countLive, dist, httpGet, log, now, pct, putMany, round, serversState, until, type Dist } from './lib.js';
import { reloadsOf } from './lib.js';
import { startPacedLoad, type LoadSummary } from './load.js';
import { startDaemon, startSide, type Ctx } from './setup.js';

export interface ChurnResult {
  changes: number;
  churnS: number;
  reloads: number;
  /** Requests the temporary upstreams served (they did get traffic). */
  poolHits: number;
  load: LoadSummary;
}

const SVC = 'churn';
const HOST = 'churn.test';
const STEP_MS = 20;

export async function churn(ctx: Ctx, variant: 'updater' | 'nohold' | 'confd'): Promise<ChurnResult> {
  const { client, args } = ctx;
  const prefix = `/bench/churn-${variant}`;
  const key = (id: string) => `${prefix}/http-services/${SVC}/${id}`;
  const stable = await Promise.all([0, 1, 2].map((i) => startBackend(`stable-${i}`)));
  const pool = await Promise.all(Array.from({ length: 8 }, (_, i) => startBackend(`pool-${i}`)));
  await client.put(key('domain')).value(HOST);
  for (const [i, b] of stable.entries()) await client.put(key(`upstreams/stable-${i}`)).value(`127.0.0.1:${b.port}`);

  const { port, masterSocket, baseline, close } = await startSide(ctx, prefix, variant);
  try {
    if (!(await until(async () => (await httpGet(port, HOST))?.startsWith('stable-'), 20_000, 50))) throw new Error(`${variant}: ${HOST} never routed`);
    const before = { reloads: await reloadsOf(masterSocket) };
    const cycles = Math.ceil(args.churnChanges / 2);
    const maxMs = cycles * 4 * STEP_MS + 120_000;
    const load = startPacedLoad({
      url: `http://127.0.0.1:${port}/`,
      host: HOST,
      intervalMs: args.loadIntervalMs,
      maxInFlight: 32,
      keepAlive: false,
      durationMs: maxMs,
      maxRequests: Math.ceil(maxMs / args.loadIntervalMs),
    });
    await sleep(500);
    const t0 = Date.now();
    let changes = 0;
    let lastRev = 0n;
    for (let i = 0; i < cycles && changes < args.churnChanges; i++) {
      const b = pool[i % pool.length]!;
      await client.put(key(`upstreams/t${i}`)).value(`127.0.0.1:${b.port}`);
      changes++;
      await sleep(STEP_MS);
      if (changes >= args.churnChanges) break;
      const del = await client.delete().key(key(`upstreams/t${i}`)).exec();
      lastRev = BigInt(String(del.header.revision));
      changes++;
      await sleep(STEP_MS);
      if ((i + 1) % 50 === 0) log(`churn ${variant}: ${changes}/${args.churnChanges} changes, ${load.done} requests`);
    }
    const churnS = (Date.now() - t0) / 1000;
    // Let the last changes land (drains finish, the baseline's last reload completes).
    if (baseline) await baseline.waitApplied(lastRev);
    await sleep(1500);
    const summary = await load.stop();
    const after = { reloads: await reloadsOf(masterSocket) };
    return {
      changes,
      churnS,
      reloads: after.reloads - before.reloads,
      poolHits: pool.reduce((n, b) => n + b.hits, 0),
      load: summary,
    };
  } finally {
    await close();
    await Promise.all([...stable, ...pool].map((b) => b.close()));
    await client.delete().prefix(`${prefix}/`).exec();
  }
}

// ------------------------------------------------------------------ churn at scale

export interface ScaleChurnResult {
  services: number;
  upstreamsPer: number;
  /** Admission mode the daemon ran with (its default). */
  admission: string;
  /** One upstream added to one service while the registry holds services x upstreamsPer: put -> in `show servers state`, out of maint. */
  convergenceMs: Dist;
  /** `changesPerS` add/remove changes for `durationS` at that size: put -> visible in `show servers state` (added: out of maint; removed: no longer ready). */
  /** `superseded`: adds removed before HAProxy ever showed them; `timeouts`: other changes not seen within 10 s. */
  churn: { changes: number; durationS: number; timeouts: number; superseded: number; latencyMs: Dist; cpuCores: number | null };
  /** Mean pass duration by kind over the run (the daemon's pass histogram; null where it has none). */
  passMs: { full: number | null; incremental: number | null };
}

/** Mean of `haproxy_updater_pass_duration_seconds{kind}` in ms, from /metrics text. */
function meanPassMs(metrics: string, kind: string): number | null {
  const v = (what: string) => Number(new RegExp(`^haproxy_updater_pass_duration_seconds_${what}\\{kind="${kind}"\\} (\\S+)$`, 'm').exec(metrics)?.[1] ?? NaN);
  const ms = (v('sum') / v('count')) * 1000;
  return Number.isFinite(ms) ? round(ms, 2) : null;
}

const SCALE_PREFIX = '/bench/scale-churn';
const CHURN_PER_S = 5;

/** User + system CPU seconds of a process so far (null when unreadable). */
async function cpuSeconds(pid: number): Promise<number | null> {
  const text = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  // Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(rest[11]) + Number(rest[12]);
  return Number.isFinite(ticks) ? ticks / 100 : null;
}

/**
 * One poller for all outstanding changes: round after round, one `show servers state
 * <backend>` per outstanding change, one at a time (many concurrent pollers would compete
 * with the updater for HAProxy's CLI), so the admin socket sees one client connection at most.
 */
class StatePoller {
  readonly #rt: RuntimeClient;
  readonly #waiting = new Set<{ backend: string; t0: number; done: (rows: ServerStateRow[]) => boolean; resolve: (ms: number | null) => void }>();
  #running = false;

  constructor(rt: RuntimeClient) {
    this.#rt = rt;
  }

  /** ms from `t0` until `done` holds for the backend's rows, or null after 10 s. */
  seen(backend: string, t0: number, done: (rows: ServerStateRow[]) => boolean): Promise<number | null> {
    const p = new Promise<number | null>((resolve) => this.#waiting.add({ backend, t0, done, resolve }));
    if (!this.#running) void this.#loop();
    return p;
  }

  async #loop(): Promise<void> {
    this.#running = true;
    while (this.#waiting.size > 0) {
      for (const w of [...this.#waiting]) {
        const rows = await this.#rt.run(showServersState(w.backend)).then(parseServersState, () => null);
        const t = now() - w.t0;
        if (rows && w.done(rows)) w.resolve(t);
        else if (t > 10_000) w.resolve(null);
        else continue;
        this.#waiting.delete(w);
      }
      await sleep(2);
    }
    this.#running = false;
  }
}

const holds = (addr: string, port: number) => (rows: ServerStateRow[]) => rows.some((r) => r.srvAddr === addr && Number(r.srvPort) === port && slotUse(r) !== 'maint' && slotUse(r) !== 'free');
const released = (addr: string, port: number) => (rows: ServerStateRow[]) =>
  !rows.some((r) => r.srvAddr === addr && Number(r.srvPort) === port && (slotUse(r) === 'up' || slotUse(r) === 'down'));

/**
 * Single-change convergence and churn while the registry holds `scaleServices` x
 * `scaleUpstreams` (closed loopback ports, as in scale.ts: the figure is the daemon's sync).
 * One daemon with its default admission; latencies from the put to what `show servers state`
 * of that backend shows; the updater's CPU from /proc over the churn window.
 */
export async function scaleChurn(ctx: Ctx): Promise<ScaleChurnResult> {
  const { client, args } = ctx;
  const S = args.scaleServices;
  const U = args.scaleUpstreams;
  const name = (s: number) => `s${String(s).padStart(4, '0')}`;
  const key = (s: number, id: string) => `${SCALE_PREFIX}/http-services/${name(s)}/upstreams/${id}`;
  const entries: Array<[string, string]> = [];
  for (let s = 0; s < S; s++) {
    entries.push([`${SCALE_PREFIX}/http-services/${name(s)}/domain`, `${name(s)}.churn.test`]);
    for (let j = 0; j < U; j++) entries.push([key(s, `u${j}`), `127.3.${s >> 8}.${s & 255}:${19001 + j}`]);
  }
  await putMany(client, entries, 64);
  const live = await startBackend('scale-churn');
  // The 10,000 scale upstreams are addresses nobody listens on, so HAProxy counts only the
  // churned ones as serving and the mass-removal hold (#12) would hold every removal of them;
  // this measures speed, not that guard.
  const d = await startDaemon(ctx, SCALE_PREFIX, ['--max-removal', '100%'], { waitReady: false });
  try {
    const re = /^http-s\d{4}$/;
    const synced = await until(async () => existsSync(d.u.adminSocket) && countLive(await serversState(d.u.adminSocket), re).configured >= S * U, 240_000, 200);
    if (!synced) throw new Error(`scale churn: ${S}x${U} never all in HAProxy`);
    await until(async () => (await d.u.get('/readyz').catch(() => ({ status: 0 }))).status === 200, 30_000, 100);
    await sleep(1000);
    const poller = new StatePoller(new RuntimeClient({ path: d.u.adminSocket }, { timeoutMs: 5000 }));

    // Single changes, one at a time, each on another service.
    const samples = args.quick ? 20 : 50;
    const conv: number[] = [];
    for (let i = 0; i < samples; i++) {
      const s = (i * 37) % S;
      const t0 = now();
      await client.put(key(s, `c${i}`)).value(`127.0.0.1:${live.port}`);
      const ms = await poller.seen(`http-${name(s)}`, t0, holds('127.0.0.1', live.port));
      if (ms !== null) conv.push(ms);
      await client.delete().key(key(s, `c${i}`)).exec();
      await poller.seen(`http-${name(s)}`, now(), released('127.0.0.1', live.port));
      await sleep(50);
    }
    log(`scale churn: single change at ${S}x${U}: p50 ${round(pct(conv, 50))} ms, p99 ${round(pct(conv, 99))} ms (${samples - conv.length} timeouts)`);

    // Open-loop churn: a change every 1/CHURN_PER_S s; the first 10 and then every other one
    // add an upstream, the others remove the oldest one added (about 2 s or more before), so
    // an add and its removal do not fall into one batch.
    const durationS = args.quick ? 10 : 20;
    const n = durationS * CHURN_PER_S;
    const lat: Array<Promise<number | null>> = [];
    const added: Array<{ k: number; s: number; addr: string }> = [];
    /** Adds removed before they were ever seen (not a latency: the change was superseded). */
    const removedEarly = new Set<Promise<number | null>>();
    const addOf = new Map<number, Promise<number | null>>();
    const cpu0 = await cpuSeconds(d.u.proc.pid);
    const w0 = now();
    let nextK = 0;
    for (let i = 0; i < n; i++) {
      const at = w0 + (i * 1000) / CHURN_PER_S;
      if (at > now()) await sleep(at - now());
      const t0 = now();
      if (i < 10 || i % 2 === 0 || added.length === 0) {
        const k = nextK++;
        const s = (k * 53 + 11) % S;
        const addr = `127.5.${k >> 8}.${k & 255}`;
        added.push({ k, s, addr });
        await client.put(key(s, `k${k}`)).value(`${addr}:19500`);
        const p = poller.seen(`http-${name(s)}`, t0, holds(addr, 19500));
        addOf.set(k, p);
        lat.push(p);
      } else {
        const { k, s, addr } = added.shift()!;
        const add = addOf.get(k)!;
        let seen = false;
        void add.then(() => (seen = true));
        await client.delete().key(key(s, `k${k}`)).exec();
        await Promise.resolve();
        if (!seen) removedEarly.add(add);
        lat.push(poller.seen(`http-${name(s)}`, t0, released(addr, 19500)));
      }
    }
    const windowS = (now() - w0) / 1000 + 1 / CHURN_PER_S;
    await sleep(1000 / CHURN_PER_S);
    const cpu1 = await cpuSeconds(d.u.proc.pid);
    const settled = await Promise.all(lat.map(async (p) => ({ ms: await p, early: removedEarly.has(p) })));
    const ok = settled.filter((x) => x.ms !== null).map((x) => x.ms as number);
    const superseded = settled.filter((x) => x.ms === null && x.early).length;
    const cpuCores = cpu0 !== null && cpu1 !== null ? round((cpu1 - cpu0) / windowS, 3) : null;
    const metrics = (await d.u.get('/metrics').catch(() => ({ body: '' }))).body;
    const passMs = { full: meanPassMs(metrics, 'full'), incremental: meanPassMs(metrics, 'incremental') };
    log(`scale churn: mean pass ${passMs.incremental ?? '-'} ms incremental, ${passMs.full ?? '-'} ms full`);
    log(`scale churn: ${n} changes in ${durationS} s: p50 ${round(pct(ok, 50))} ms, p99 ${round(pct(ok, 99))} ms (${superseded} superseded), updater CPU ${cpuCores} core`);
    return {
      services: S,
      upstreamsPer: U,
      admission: 'daemon default',
      convergenceMs: dist(conv),
      churn: { changes: n, durationS, timeouts: n - ok.length - superseded, superseded, latencyMs: dist(ok), cpuCores },
      passMs,
    };
  } finally {
    await d.close();
    await live.close();
    await client.delete().prefix(`${SCALE_PREFIX}/`).exec();
  }
}
