/**
 * 1. Convergence: time from an etcd `put` of a new upstream to that upstream's first
 * request through HAProxy, as seen by the upstream itself (`firstHitAt` of a fresh backend
 * under a steady keep-alive load to its service). Each change adds one new upstream to a
 * service that already has one, waits for its first hit, deletes it again and pauses.
 * The service is created with `options {"minSlots":16}` so that the pending removals of
 * earlier changes never push an addition onto an overflow server: every change takes the
 * slot path. Floors: a bare etcd watch notification, one Runtime API round trip.
 * Variants: the updater in each `--admission` mode (probe: its own probe then `health up`;
 * check: HAProxy's `rise` checks; immediate: at once) and the confd-like baseline.
 */
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { RuntimeClient, setServerWeight, showInfo } from '../src/runtime/index.js';
import { sleep, startBackend, type Backend } from '../testkit/index.js';
import { dist, httpGet, log, serversState, until, type Dist } from './lib.js';
import { reloadsOf } from './lib.js';
import { startPacedLoad, type LoadSummary } from './load.js';
import { startSide, type Ctx } from './setup.js';

export type ConvVariant = 'probe' | 'check' | 'immediate' | 'confd';
export const CONV_VARIANTS: readonly ConvVariant[] = ['probe', 'check', 'immediate', 'confd'];

export interface ConvResult {
  variant: ConvVariant;
  changes: number;
  /** Changes whose upstream got no request within 15 s. */
  timeouts: number;
  /** put → first request at the new upstream, ms. */
  convergenceMs: Dist;
  /** put → etcd acknowledged, ms. */
  putAckMs: Dist;
  reloads: number;
  /** Overflow servers seen in the backend at the end (0 = every change took a slot). */
  overflowServers: number;
  load: LoadSummary;
}

export interface Floors {
  etcdWatchMs: Dist;
  socketShowInfoMs: Dist;
  socketSetWeightMs: Dist;
}

const SVC = 'conv';
const HOST = 'conv.test';

export async function convergence(ctx: Ctx, variant: ConvVariant, floors?: (f: Floors) => void): Promise<ConvResult> {
  const { client, args } = ctx;
  const prefix = `/bench/conv-${variant}`;
  const key = (id: string) => `${prefix}/http-services/${SVC}/${id}`;
  const stable = await startBackend('stable');
  const fresh: Backend[] = [];
  await client.put(key('domain')).value(HOST);
  await client.put(key('options')).value(JSON.stringify({ minSlots: 16 }));
  await client.put(key('upstreams/stable')).value(`127.0.0.1:${stable.port}`);

  const { port, masterSocket, adminSocket, baseline, close } = await startSide(ctx, prefix, variant === 'confd' ? 'confd' : 'updater', variant === 'confd' ? [] : ['--admission', variant]);

  try {
    if (!(await until(async () => (await httpGet(port, HOST)) === 'stable', 20_000, 50))) throw new Error(`${variant}: ${HOST} never routed`);
    if (floors) floors(await measureFloors(ctx, adminSocket));

    const before = { reloads: await reloadsOf(masterSocket) };
    const maxMs = args.changes * 20_000 + 60_000;
    const load = startPacedLoad({
      url: `http://127.0.0.1:${port}/`,
      host: HOST,
      intervalMs: args.convIntervalMs,
      maxInFlight: 4,
      keepAlive: true,
      durationMs: maxMs,
      maxRequests: Math.ceil(maxMs / args.convIntervalMs),
    });
    await until(() => load.ok > 50, 10_000, 10);

    const conv: number[] = [];
    const acks: number[] = [];
    let timeouts = 0;
    for (let i = 0; i < args.changes; i++) {
      const b = await startBackend(`c${i}`);
      fresh.push(b);
      const id = `upstreams/c${i}`;
      const t0 = Date.now();
      await client.put(key(id)).value(`127.0.0.1:${b.port}`);
      acks.push(Date.now() - t0);
      const hit = await until(() => b.firstHitAt > 0, 15_000, 1);
      if (hit) conv.push(b.firstHitAt - t0);
      else timeouts++;
      const del = await client.delete().key(key(id)).exec();
      if (baseline) await baseline.waitApplied(BigInt(String(del.header.revision)));
      await sleep(args.convGapMs);
      if ((i + 1) % 25 === 0) log(`convergence ${variant}: ${i + 1}/${args.changes}, p50 so far ${dist(conv).p50} ms`);
    }
    const summary = await load.stop();
    const after = { reloads: await reloadsOf(masterSocket) };
    const rows = await serversState(adminSocket).catch(() => []);
    const overflow = rows.filter((r) => r.beName === `http-${SVC}` && /^x\d+$/.test(r.srvName)).length;
    return {
      variant,
      changes: args.changes,
      timeouts,
      convergenceMs: dist(conv),
      putAckMs: dist(acks),
      reloads: after.reloads - before.reloads,
      overflowServers: overflow,
      load: summary,
    };
  } finally {
    await close();
    await Promise.all([stable, ...fresh].map((b) => b.close()));
    await client.delete().prefix(`${prefix}/`).exec();
  }
}

/** Floors: put → watch event on a bare etcd watch; one Runtime API command round trip. */
async function measureFloors(ctx: Ctx, adminSocket: string): Promise<Floors> {
  const { client, args } = ctx;
  const n = args.floorSamples;
  const k = '/bench/floor/key';
  const watcher = await client.watch().key(k).create();
  const watch: number[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const got = new Promise<number>((r) => watcher.once('put', () => r(performance.now())));
      const t0 = performance.now();
      await client.put(k).value(String(i));
      const t1 = await Promise.race([got, sleep(5000).then(() => NaN)]);
      if (Number.isFinite(t1)) watch.push(t1 - t0);
    }
  } finally {
    await watcher.cancel();
    await client.delete().key(k).exec();
  }
  // The same client settings as the daemon: a new unix-socket connection per call.
  const rt = new RuntimeClient({ path: adminSocket }, { timeoutMs: 5000 });
  const rows = await serversState(adminSocket);
  const srv = rows.find((r) => r.beName === `http-${SVC}` && r.srvAddr === '127.0.0.1' && r.srvOpState === 2);
  if (!srv) throw new Error('floors: no UP server in http-conv');
  const info: number[] = [];
  const weight: number[] = [];
  for (let i = 0; i < n; i++) {
    let t0 = performance.now();
    await rt.run(showInfo());
    info.push(performance.now() - t0);
    t0 = performance.now();
    await rt.run(setServerWeight(srv.beName, srv.srvName, srv.srvUweight));
    weight.push(performance.now() - t0);
  }
  return { etcdWatchMs: dist(watch), socketShowInfoMs: dist(info), socketSetWeightMs: dist(weight) };
}
