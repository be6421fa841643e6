/**
 * 4. Burst: `burstServices` existing http services (created before the daemon starts, each
 * with `options {"minSlots":16}` and no upstream yet) receive `burstUpstreams` upstreams each
 * (100 x 10 = 1 000 by default), all put at once: one `Promise.all` of single-key puts over
 * one etcd client (etcd's default limit of 128 operations per transaction rules out a single
 * txn of 1 000). Upstream j of every service points at pool backend j, so every one is
 * healthy. Then `show servers state` is polled (every 20 ms) until HAProxy reflects all of
 * them: first with their address and out of maintenance, then UP (health checks passed).
 */
import { startBackend } from '../testkit/index.js';
import { countLive, log, putMany, serversState, until } from './lib.js';
import { reloadsOf } from './lib.js';
import { startSide, type Ctx } from './setup.js';

export interface BurstResult {
  changes: number;
  /** put of the first → all acknowledged, s. */
  ackedS: number;
  /** put of the first → all with their address, out of maintenance, s (null: not within 120 s). */
  configuredS: number | null;
  /** put of the first → all UP, s. */
  upS: number | null;
  reloads: number;
}

export async function burst(ctx: Ctx, variant: 'updater' | 'confd'): Promise<BurstResult> {
  const { client, args } = ctx;
  const prefix = `/bench/burst-${variant}`;
  const S = args.burstServices;
  const U = args.burstUpstreams;
  const name = (s: number) => `b${String(s).padStart(3, '0')}`;
  const pool = await Promise.all(Array.from({ length: U }, (_, j) => startBackend(`pool-${j}`)));
  const setup: Array<[string, string]> = [];
  for (let s = 0; s < S; s++) {
    setup.push([`${prefix}/http-services/${name(s)}/domain`, `${name(s)}.test`]);
    setup.push([`${prefix}/http-services/${name(s)}/options`, JSON.stringify({ minSlots: 16 })]);
  }
  await putMany(client, setup);

  const { masterSocket, adminSocket, close } = await startSide(ctx, prefix, variant);
  const re = /^http-b\d{3}$/;
  try {
    // All backends present with their free slots (the baseline's have no server yet, so no rows).
    if (variant === 'updater') {
      const ready = await until(async () => new Set((await serversState(adminSocket)).filter((r) => re.test(r.beName)).map((r) => r.beName)).size === S, 30_000, 100);
      if (!ready) throw new Error(`${variant}: the ${S} backends did not appear`);
    }
    const before = { reloads: await reloadsOf(masterSocket) };
    const entries: Array<[string, string]> = [];
    for (let s = 0; s < S; s++) for (let j = 0; j < U; j++) entries.push([`${prefix}/http-services/${name(s)}/upstreams/u${j}`, `127.0.0.1:${pool[j]!.port}`]);
    const total = entries.length;
    const t0 = Date.now();
    await Promise.all(entries.map(([k, v]) => client.put(k).value(v)));
    const ackedS = (Date.now() - t0) / 1000;
    let configuredS: number | null = null;
    let upS: number | null = null;
    await until(
      async () => {
        const c = countLive(await serversState(adminSocket), re);
        if (configuredS === null && c.configured >= total) configuredS = (Date.now() - t0) / 1000;
        if (upS === null && c.up >= total) upS = (Date.now() - t0) / 1000;
        return upS !== null;
      },
      120_000,
      20,
    );
    const after = { reloads: await reloadsOf(masterSocket) };
    log(`burst ${variant}: acked ${ackedS.toFixed(2)} s, configured ${configuredS} s, up ${upS} s, reloads ${after.reloads - before.reloads}`);
    return { changes: total, ackedS, configuredS, upS, reloads: after.reloads - before.reloads };
  } finally {
    await close();
    await Promise.all(pool.map((b) => b.close()));
    await client.delete().prefix(`${prefix}/`).exec();
  }
}
