/**
 * 2. Churn under load: a steady open-loop load (a new TCP connection per request) to a
 * service with 3 stable upstreams while `churnChanges` add/remove changes run: upstream
 * `t<i>` is put (pointing at one of 8 pool backends, round robin), deleted 20 ms later,
 * and the next one follows 20 ms after that. The service has the default options (4 slots),
 * so additions beyond the free slots go to overflow servers. Every upstream stays alive:
 * a failed request is the updater's (or the reload's) doing, not a dead upstream's.
 */
import { sleep, startBackend } from '../testkit/index.js';
import { httpGet, log, until } from './lib.js';
import { reloadsOf } from './lib.js';
import { startPacedLoad, type LoadSummary } from './load.js';
import { startSide, type Ctx } from './setup.js';

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
