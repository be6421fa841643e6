/** Benchmark options, the shared context, and starting the real daemon with its defaults. */
import type { Etcd3 } from 'etcd3';
import path from 'node:path';
import { freePort, killHaproxy, removeDir, startUpdater, tempDir, type EtcdHandle, type UpdaterHandle } from '../testkit/index.js';
import { ConfdBaseline } from './confd.js';

export const MEASURES = ['convergence', 'churn', 'reloads', 'burst', 'scale', 'scalechurn', 'cluster'] as const;
export type Measure = (typeof MEASURES)[number];

export interface Args {
  quick: boolean;
  json: boolean;
  only: Set<Measure>;
  /** Convergence: changes per variant. */
  changes: number;
  /** Convergence: load pacing (ms between requests, keep-alive). */
  convIntervalMs: number;
  /** Convergence: pause after each delete before the next change. */
  convGapMs: number;
  /** Floors: samples. */
  floorSamples: number;
  /** Churn: add/remove changes. */
  churnChanges: number;
  /** Churn and reloads: load pacing (ms between requests, new connection each). */
  loadIntervalMs: number;
  /** Structural reloads per guard. */
  reloads: number;
  burstServices: number;
  burstUpstreams: number;
  scaleServices: number;
  scaleUpstreams: number;
  /** Grow one backend from 1 to this many upstreams. */
  growTo: number;
  /** Pause between two growth puts. */
  growGapMs: number;
  /** The shortened --consolidate-after of the second growth run. */
  growConsolidate: string;
  /** Wait for the default (60 s) consolidation reload after growth. */
  waitConsolidation: boolean;
  /** Cluster: changes whose cross-instance spread is measured. */
  clusterChanges: number;
  /**
   * Scale: a second cold start + new service on this HAProxy executable, beside the first
   * (e.g. 3.4, where a new service needs no reload). `auto`: the 3.4 binary of
   * scripts/haproxy-versions.sh (full runs); null: none (quick runs).
   */
  compareHaproxyBin: string | null;
  /** Compile dist/ before measuring, so the daemon runs as shipped (default true; `--no-build`). */
  build: boolean;
}

export interface Ctx {
  args: Args;
  etcd: EtcdHandle;
  client: Etcd3;
}

/** The daemon's own defaults where the test harness shortens them for tests. */
export const DAEMON_DEFAULTS = ['--verify-interval', '5s', '--drain-timeout', '10s'];

export interface Daemon {
  u: UpdaterHandle;
  stateDir: string;
  close(): Promise<void>;
}

export async function startDaemon(ctx: Ctx, prefix: string, extra: string[] = [], opts: { waitReady?: boolean } = {}): Promise<Daemon> {
  const stateDir = await tempDir('hu-bench-');
  const u = await startUpdater({
    etcdEndpoint: ctx.etcd.endpoint,
    stateDir,
    extraArgs: ['--prefix', prefix, ...DAEMON_DEFAULTS, ...extra],
    waitReady: opts.waitReady,
  });
  return {
    u,
    stateDir,
    close: async () => {
      await u.stop().catch(() => undefined);
      await killHaproxy(u.masterSocket).catch(() => undefined);
      await removeDir(stateDir);
    },
  };
}

export type Variant = 'updater' | 'nohold' | 'confd';

/** One side of a comparison, running and routed through its own HAProxy. */
export interface Side {
  port: number;
  masterSocket: string;
  adminSocket: string;
  /** The confd-like baseline (variant `confd`), else null. */
  baseline: ConfdBaseline | null;
  close(): Promise<void>;
}

/** Starts the daemon (`updater`, `nohold`: `--no-hold-until-healthy`; `extra`: more daemon flags) or the confd-like baseline. */
export async function startSide(ctx: Ctx, prefix: string, variant: Variant, extra: string[] = []): Promise<Side> {
  if (variant === 'confd') {
    const dir = await tempDir('hu-bench-confd-');
    const baseline = new ConfdBaseline({ etcdEndpoint: ctx.etcd.endpoint, prefix, dir, httpPort: await freePort() });
    await baseline.start();
    return {
      port: baseline.settings.httpPort,
      masterSocket: path.join(dir, 'master.sock'),
      adminSocket: baseline.settings.adminSocket,
      baseline,
      close: async () => {
        await baseline.stop();
        await removeDir(dir);
      },
    };
  }
  const d = await startDaemon(ctx, prefix, [...(variant === 'nohold' ? ['--no-hold-until-healthy'] : []), ...extra]);
  return { port: d.u.httpPort, masterSocket: d.u.masterSocket, adminSocket: d.u.adminSocket, baseline: null, close: d.close };
}
