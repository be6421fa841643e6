/**
 * `npm run bench [-- --quick] [-- --json] [-- --only convergence,churn] [-- --changes 100 ...]`
 *
 * Measures, in one run on this machine and side by side, this project's runtime path
 * (the real `haproxy-updater run`, managed HAProxy) against a confd-like render + check +
 * reload baseline (bench/confd.ts), with real etcd, real HAProxy and small HTTP backends on
 * loopback. Prints a table with ratios; `--json` writes bench/results.json. See
 * bench/README.md for what each figure means and how it is taken.
 */
import './env.js';
import { writeFile } from 'node:fs/promises';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { BIN_ENV, bin, execFileP, startEtcd, type Tool } from '../testkit/index.js';
import { convergence, type ConvResult, type Floors } from './convergence.js';
import { churn, scaleChurn, type ChurnResult, type ScaleChurnResult } from './churn.js';
import { reloads, type ReloadsResult } from './reloads.js';
import { burst, type BurstResult } from './burst.js';
import { scale, type ScaleResult } from './scale.js';
import { cluster, type ClusterResult } from './cluster.js';
import { etcdClient, log, machine, round, type Dist } from './lib.js';
import { MEASURES, type Args, type Ctx, type Measure } from './setup.js';
import { summaryTable } from './summary.js';

const USAGE = `npm run bench -- [flags]
  --quick                 smaller counts (about 2-3 minutes instead of about 10)
  --json                  also write bench/results.json
  --only <m,m>            run only these measures (${MEASURES.join(', ')})
  --changes <n>           convergence: changes per variant (quick 50, full 200)
  --conv-interval <ms>    convergence: ms between two requests of the keep-alive load (2)
  --conv-gap <ms>         convergence: pause after each delete (quick 50, full 100)
  --floor-samples <n>     floors: samples (quick 50, full 200)
  --churn-changes <n>     churn: add/remove changes (quick 200, full 500)
  --load-interval <ms>    churn/reloads: ms between two requests, new connection each (2)
  --reloads <n>           structural reloads per guard (quick 10, full 20)
  --burst-services <n>    burst: services (100)
  --burst-upstreams <n>   burst: upstreams per service (10)
  --scale-services <n>    scale: services (quick 200, full 1000)
  --scale-upstreams <n>   scale: upstreams per service (10)
  --grow-to <n>           scale: grow one backend from 1 to n upstreams (200)
  --grow-gap <ms>         scale: pause between two growth puts (10)
  --grow-consolidate <d>  scale: the shortened --consolidate-after (1s)
  --cluster-changes <n>   cluster: changes measured across 2 instances (quick 20, full 100; needs root)
  --[no-]wait-consolidation  scale: wait for the default 60 s consolidation (full: yes, quick: no)
  --haproxy-bin <path>    HAProxy executable (env HAPROXY_BIN; default haproxy on PATH)
  --etcd-bin <path>       etcd executable (env ETCD_BIN; default etcd on PATH; etcdctl: ETCDCTL_BIN)
  --compare-haproxy-bin <path|auto>  scale: cold start + new service again on this HAProxy, side by side
                          (full: auto = 3.4 from scripts/haproxy-versions.sh; quick: none)
  --no-compare            scale: no second HAProxy
  --no-build              do not compile dist/ first: the daemon then runs src/ through tsx
                          (bin/haproxy-updater.js runs dist/ only when it is up to date)`;

function parseArgs(argv: string[]): Args {
  const quick = argv.includes('--quick');
  const a: Args = {
    quick,
    json: false,
    only: new Set(MEASURES),
    changes: quick ? 50 : 200,
    convIntervalMs: 2,
    convGapMs: quick ? 50 : 100,
    floorSamples: quick ? 50 : 200,
    churnChanges: quick ? 200 : 500,
    loadIntervalMs: 2,
    reloads: quick ? 10 : 20,
    burstServices: 100,
    burstUpstreams: 10,
    scaleServices: quick ? 200 : 1000,
    scaleUpstreams: 10,
    growTo: 200,
    growGapMs: 10,
    growConsolidate: '1s',
    waitConsolidation: !quick,
    clusterChanges: quick ? 20 : 100,
    compareHaproxyBin: quick ? null : 'auto',
    build: true,
  };
  const num = (name: string, v: string | undefined, min = 1): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new Error(`--${name} needs an integer >= ${min}, got ${v}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!;
    const v = () => argv[++i];
    switch (flag) {
      case '--quick':
        break;
      case '--json':
        a.json = true;
        break;
      case '--only': {
        const list = (v() ?? '').split(',').filter(Boolean);
        for (const m of list) if (!(MEASURES as readonly string[]).includes(m)) throw new Error(`--only: unknown measure ${m}`);
        a.only = new Set(list as Measure[]);
        break;
      }
      case '--changes': a.changes = num('changes', v()); break;
      case '--conv-interval': a.convIntervalMs = num('conv-interval', v()); break;
      case '--conv-gap': a.convGapMs = num('conv-gap', v(), 0); break;
      case '--floor-samples': a.floorSamples = num('floor-samples', v()); break;
      case '--churn-changes': a.churnChanges = num('churn-changes', v(), 2); break;
      case '--load-interval': a.loadIntervalMs = num('load-interval', v()); break;
      case '--reloads': a.reloads = num('reloads', v()); break;
      case '--burst-services': a.burstServices = num('burst-services', v()); break;
      case '--burst-upstreams': a.burstUpstreams = num('burst-upstreams', v()); break;
      case '--scale-services': a.scaleServices = num('scale-services', v()); break;
      case '--scale-upstreams': a.scaleUpstreams = num('scale-upstreams', v()); break;
      case '--grow-to': a.growTo = num('grow-to', v(), 2); break;
      case '--grow-gap': a.growGapMs = num('grow-gap', v(), 0); break;
      case '--grow-consolidate': a.growConsolidate = v() ?? '1s'; break;
      case '--cluster-changes': a.clusterChanges = num('cluster-changes', v(), 2); break;
      case '--wait-consolidation': a.waitConsolidation = true; break;
      case '--no-wait-consolidation': a.waitConsolidation = false; break;
      // testkit reads the executables from the environment (one owner); the flag sets it.
      case '--haproxy-bin': process.env.HAPROXY_BIN = v() ?? ''; break;
      case '--etcd-bin': process.env.ETCD_BIN = v() ?? ''; break;
      case '--compare-haproxy-bin': a.compareHaproxyBin = v() ?? null; break;
      case '--no-compare': a.compareHaproxyBin = null; break;
      case '--no-build': a.build = false; break;
      case '-h':
      case '--help':
        console.log(USAGE);
        process.exit(0);
      default:
        throw new Error(`unknown flag ${flag}\n${USAGE}`);
    }
  }
  return a;
}

export interface Results {
  machine: Awaited<ReturnType<typeof machine>>;
  args: Omit<Args, 'only'> & { only: Measure[] };
  startedAt: string;
  durationS: number;
  /** Keys read by other scripts: convergence.{probe,check,immediate,confd}.convergenceMs.{p50,p99}, convergence.floors.{etcdWatchMs,socketSetWeightMs}.p50. */
  convergence?: { floors: Floors; probe: ConvResult; check: ConvResult; immediate: ConvResult; confd: ConvResult; ratios: Record<string, number> };
  churn?: { updater: ChurnResult; nohold: ChurnResult; confd: ChurnResult };
  reloads?: ReloadsResult;
  burst?: { updater: BurstResult; confd: BurstResult };
  scale?: ScaleResult;
  /** Stable keys: `scaleConvergence.probe.convergenceMs.{p50,p99}` (measured with the daemon's default admission). */
  scaleConvergence?: { probe: { admission: string; convergenceMs: Dist } };
  scaleChurn?: { services: number; upstreamsPer: number; changes: number; durationS: number; timeouts: number; superseded: number; latencyMs: Dist; cpuCores: number | null; passMs: ScaleChurnResult['passMs'] };
  cluster?: ClusterResult;
  /** 1-minute load average before and after the run (the benchmark itself adds ~2-3). */
  loadAverage?: { before: number; after: number };
  errors: Record<string, string>;
}

// ------------------------------------------------------------------ table

const f1 = (v: number | null | undefined) => (v === null || v === undefined || !Number.isFinite(v) ? '-' : v >= 100 ? String(Math.round(v)) : v.toFixed(1));
const ratio = (b: number, a: number) => (a > 0 && Number.isFinite(b / a) ? `${(b / a).toFixed(b / a >= 10 ? 0 : 1)}x` : '-');
const trio = (d: Dist) => `${f1(d.p50)} / ${f1(d.p95)} / ${f1(d.p99)}`;

function table(r: Results): string {
  const rows: string[][] = [['measure', 'this project (a)', 'confd-like (b)', 'b/a']];
  const sep = () => rows.push([]);
  if (r.convergence) {
    const c = r.convergence;
    const line = (label: string, a: ConvResult) =>
      rows.push([
        `${label} p50/p95/p99 ms (n=${a.convergenceMs.n})`,
        trio(a.convergenceMs),
        trio(c.confd.convergenceMs),
        `${ratio(c.confd.convergenceMs.p50, a.convergenceMs.p50)} / ${ratio(c.confd.convergenceMs.p95, a.convergenceMs.p95)} / ${ratio(c.confd.convergenceMs.p99, a.convergenceMs.p99)}`,
      ]);
    line('convergence, --admission probe (default)', c.probe);
    line('convergence, --admission check', c.check);
    line('convergence, --admission immediate', c.immediate);
    rows.push([
      'convergence: timeouts / reloads / overflow',
      (['probe', 'check', 'immediate'] as const).map((m) => `${m} ${c[m].timeouts}/${c[m].reloads}/${c[m].overflowServers}`).join(', '),
      `${c.confd.timeouts}/${c.confd.reloads}/-`,
      '',
    ]);
    const floor = c.floors.etcdWatchMs.p50 + c.floors.socketSetWeightMs.p50;
    rows.push(['convergence p50 / floor (etcd watch + set weight p50)', `probe ${ratio(c.probe.convergenceMs.p50, floor)}, immediate ${ratio(c.immediate.convergenceMs.p50, floor)} (floor ${f1(floor)} ms)`, '', '']);
    rows.push(['floor: etcd put -> watch event p50/p95/p99 ms', trio(c.floors.etcdWatchMs), '', '']);
    rows.push(['floor: socket `show info` p50/p95/p99 ms', trio(c.floors.socketShowInfoMs), '', '']);
    rows.push(['floor: socket `set weight` p50/p95/p99 ms', trio(c.floors.socketSetWeightMs), '', '']);
    rows.push(['etcd put ack p50 ms (all variants)', f1(c.probe.putAckMs.p50), f1(c.confd.putAckMs.p50), '']);
    sep();
  }
  if (r.churn) {
    const { updater: a, nohold: n, confd: b } = r.churn;
    const both = (f: (x: ChurnResult) => string) => `${f(a)} (no hold ${f(n)})`;
    rows.push([`churn: ${a.changes} changes in s`, both((x) => f1(x.churnS)), f1(b.churnS), '']);
    rows.push(['churn: failed / requests', both((x) => `${x.load.failed} / ${x.load.requests}`), `${b.load.failed} / ${b.load.requests}`, '']);
    rows.push(['churn: latency p50 / p99 / max ms', `${f1(a.load.p50)} / ${f1(a.load.p99)} / ${f1(a.load.max)}`, `${f1(b.load.p50)} / ${f1(b.load.p99)} / ${f1(b.load.max)}`, `p99 ${ratio(b.load.p99, a.load.p99)}`]);
    rows.push(['  (no hold)', `${f1(n.load.p50)} / ${f1(n.load.p99)} / ${f1(n.load.max)}`, '', `p99 ${ratio(b.load.p99, n.load.p99)}`]);
    rows.push(['churn: HAProxy reloads', both((x) => String(x.reloads)), String(b.reloads), '']);
    rows.push(['churn: requests served by the temporary upstreams', both((x) => String(x.poolHits)), String(b.poolHits), '']);
    sep();
  }
  if (r.reloads) {
    for (const g of [r.reloads.none, r.reloads.iptables]) {
      if (g.skipped) {
        rows.push([`${r.reloads.count} reloads, guard ${g.guard}`, g.skipped, '', '']);
        continue;
      }
      rows.push([
        `${r.reloads.count} reloads, guard ${g.guard}${g.netns ? ' (netns)' : ''}: failed / req, p99 / max ms`,
        `${g.load!.failed} / ${g.load!.requests}, ${f1(g.load!.p99)} / ${f1(g.load!.max)}; >0.5/1.5/2.5 s: ${g.load!.slow.over500ms}/${g.load!.slow.over1500ms}/${g.load!.slow.over2500ms}`,
        '',
        '',
      ]);
      rows.push([`  reload p50 / max ms; guard window p50 / max ms`, `${f1(g.reloadMs!.p50)} / ${f1(g.reloadMs!.max)}; ${f1(g.guardWindowMs!.p50)} / ${f1(g.guardWindowMs!.max)}`, '', '']);
    }
    sep();
  }
  if (r.burst) {
    const { updater: a, confd: b } = r.burst;
    rows.push([`burst ${a.changes} upstreams: all acked s`, f1(a.ackedS), f1(b.ackedS), '']);
    rows.push(['burst: all in HAProxy (addr, not maint) s', f1(a.configuredS), f1(b.configuredS), ratio(b.configuredS ?? NaN, a.configuredS ?? NaN)]);
    rows.push(['burst: all UP s', f1(a.upS), f1(b.upS), ratio(b.upS ?? NaN, a.upS ?? NaN)]);
    rows.push(['burst: HAProxy reloads', String(a.reloads), String(b.reloads), '']);
    sep();
  }
  if (r.scale) {
    const s = r.scale;
    rows.push([`scale ${s.services}x${s.upstreamsPer}: keys put s`, f1(s.populateS), '', '']);
    rows.push(['scale: cold start -> all in HAProxy s', f1(s.coldStartS), '', '']);
    rows.push(['scale: cold start -> /readyz s', f1(s.readyS), '', '']);
    rows.push(['scale: updater RSS MiB after sync', f1(s.updaterRssMiB), '', '']);
    rows.push(['scale: HAProxy worker RSS MiB', f1(s.haproxyWorkerRssMiB), '', '']);
    rows.push(['scale: new service at scale, put -> routed s', f1(s.newServiceS), '', '']);
    rows.push(['scale: new service at scale, HAProxy reloads', String(s.newServiceReloads), '', '']);
    if (s.newServiceSplit) {
      const x = s.newServiceSplit;
      rows.push(['  render / haproxy -c / reload ms', `${x.renderMs} / ${x.checkMs} / ${x.reloadMs}`, '', '']);
    }
    if (s.compare) {
      const c = s.compare;
      rows.push([`scale on HAProxy ${c.haproxy}: cold start -> all in HAProxy s`, f1(c.coldStartS), '', '']);
      rows.push([`scale on HAProxy ${c.haproxy}: new service put -> routed s`, f1(c.newServiceS), '', '']);
      rows.push([`scale on HAProxy ${c.haproxy}: new service HAProxy reloads`, String(c.newServiceReloads), '', '']);
    }
    for (const g of s.growth) {
      rows.push([
        `grow 1->${g.to}, consolidate-after ${g.consolidateAfter}: reloads`,
        `${g.reloadsDuringGrowth} during growth, ${g.reloadsTotal} in all`,
        '',
        '',
      ]);
      rows.push([`  all ${g.to} in HAProxy / UP s; slots, overflow at end`, `${f1(g.allConfiguredS)} / ${f1(g.allUpS)}; ${g.slotsAtEnd}, ${g.overflowAtEnd}`, '', '']);
    }
  }
  if (r.scaleConvergence && r.scaleChurn) {
    const c = r.scaleChurn;
    if (r.scale) sep();
    rows.push([`one upstream added at ${c.services}x${c.upstreamsPer}: put -> in HAProxy p50/p95/p99 ms`, trio(r.scaleConvergence.probe.convergenceMs), '', '']);
    rows.push([`churn at ${c.services}x${c.upstreamsPer}, ${c.changes} changes in ${c.durationS} s: p50/p95/p99 ms`, `${trio(c.latencyMs)} (${c.timeouts} timeouts, ${c.superseded} adds superseded)`, '', '']);
    rows.push(['  updater CPU during that churn, cores', c.cpuCores === null ? '-' : c.cpuCores.toFixed(2), '', '']);
    rows.push(['  mean pass ms at that size: incremental / full', `${f1(c.passMs.incremental)} / ${f1(c.passMs.full)}`, '', '']);
  }
  if (r.cluster) {
    const c = r.cluster;
    if ('skipped' in c) rows.push(['cluster: skipped', c.skipped, '', '']);
    else {
      if (r.scale) sep();
      rows.push([`cluster ${c.instances} instances, ${c.changes} changes: spread p50/p99 ms`, `${f1(c.spreadMs.p50)} / ${f1(c.spreadMs.p99)}`, '', '']);
      rows.push(['cluster: first instance routed p50/p99 ms', `${f1(c.convergenceMs.p50)} / ${f1(c.convergenceMs.p99)}`, '', '']);
      rows.push(['cluster: leader killed -> change routed everywhere s', f1(c.failoverS), '', '']);
    }
  }
  for (const [k, v] of Object.entries(r.errors)) rows.push([`${k}: ERROR`, v.slice(0, 120), '', '']);
  const widths = [0, 1, 2, 3].map((i) => Math.max(...rows.map((row) => (row[i] ?? '').length)));
  return rows
    .map((row, idx) =>
      row.length === 0 ? widths.map((w) => '-'.repeat(w)).join('-+-') : row.map((c, i) => c.padEnd(widths[i]!)).join(' | ') + (idx === 0 ? `\n${widths.map((w) => '='.repeat(w)).join('=+=')}` : ''),
    )
    .join('\n');
}

// ------------------------------------------------------------------ main

async function main(): Promise<number> {
  let args: Args;
  try {
    args = parseArgs(process.argv.slice(2));
    for (const tool of Object.keys(BIN_ENV) as Tool[]) bin(tool); // a missing executable is a usage error
  } catch (err) {
    console.error(`bench: ${(err as Error).message}`);
    return 2;
  }
  const started = Date.now();
  const results: Results = {
    machine: await machine(),
    args: { ...args, only: [...args.only] },
    startedAt: new Date(started).toISOString(),
    durationS: 0,
    errors: {},
  };
  const m = results.machine;
  const loadBefore = os.loadavg()[0] ?? 0;
  if (loadBefore > 0.5) log(`note: load average ${loadBefore.toFixed(2)} before the start: other work on this machine skews the figures`);
  log(`machine: ${m.cpus} x ${m.cpuModel}, ${m.memGiB} GiB, kernel ${m.kernel}, node ${m.node}, ${m.haproxy}, ${m.etcd}${m.root ? ', root' : ''}`);
  if (args.build) {
    // The daemon as shipped (the image runs dist/); bin/ falls back to src/ when dist/ is stale.
    const t = Date.now();
    await execFileP(process.execPath, [fileURLToPath(new URL('../node_modules/typescript/bin/tsc', import.meta.url)), '-p', fileURLToPath(new URL('../tsconfig.build.json', import.meta.url))]);
    log(`built dist/ in ${round((Date.now() - t) / 1000)} s`);
  }
  const etcd = await startEtcd();
  const ctx: Ctx = { args, etcd, client: etcdClient(etcd.endpoint) };
  const run = async <T>(name: Measure, fn: () => Promise<T>): Promise<T | undefined> => {
    if (!args.only.has(name)) return undefined;
    const t = Date.now();
    log(`${name}: start`);
    try {
      const v = await fn();
      log(`${name}: done in ${round((Date.now() - t) / 1000)} s`);
      return v;
    } catch (err) {
      log(`${name}: FAILED: ${(err as Error).stack ?? String(err)}`);
      results.errors[name] = (err as Error).message ?? String(err);
      return undefined;
    }
  };
  try {
    results.convergence = await run('convergence', async () => {
      let floors: Floors | undefined;
      const probe = await convergence(ctx, 'probe', (f) => (floors = f));
      const check = await convergence(ctx, 'check');
      const immediate = await convergence(ctx, 'immediate');
      const confd = await convergence(ctx, 'confd');
      const r = (p: 'p50' | 'p95' | 'p99', a: ConvResult) => round(confd.convergenceMs[p] / a.convergenceMs[p], 2);
      const floor = floors!.etcdWatchMs.p50 + floors!.socketSetWeightMs.p50;
      return {
        floors: floors!,
        probe,
        check,
        immediate,
        confd,
        ratios: {
          confdOverProbeP50: r('p50', probe),
          confdOverProbeP99: r('p99', probe),
          confdOverCheckP50: r('p50', check),
          confdOverCheckP99: r('p99', check),
          confdOverImmediateP50: r('p50', immediate),
          confdOverImmediateP99: r('p99', immediate),
          probeOverFloorP50: round(probe.convergenceMs.p50 / floor, 2),
          immediateOverFloorP50: round(immediate.convergenceMs.p50 / floor, 2),
        },
      };
    });
    results.churn = await run('churn', async () => ({ updater: await churn(ctx, 'updater'), nohold: await churn(ctx, 'nohold'), confd: await churn(ctx, 'confd') }));
    results.reloads = await run('reloads', () => reloads(ctx));
    results.burst = await run('burst', async () => ({ updater: await burst(ctx, 'updater'), confd: await burst(ctx, 'confd') }));
    results.scale = await run('scale', () => scale(ctx));
    const sc = await run('scalechurn', () => scaleChurn(ctx));
    if (sc) {
      results.scaleConvergence = { probe: { admission: sc.admission, convergenceMs: sc.convergenceMs } };
      results.scaleChurn = { services: sc.services, upstreamsPer: sc.upstreamsPer, ...sc.churn, passMs: sc.passMs };
    }
    results.cluster = await run('cluster', () => cluster(ctx));
  } finally {
    ctx.client.close();
    await etcd.destroy();
  }
  results.durationS = round((Date.now() - started) / 1000);
  results.loadAverage = { before: round(loadBefore, 2), after: round(os.loadavg()[0] ?? 0, 2) };
  console.log(`\nhaproxy-updater benchmark${args.quick ? ' (--quick)' : ''}, ${results.startedAt}, ${results.durationS} s`);
  console.log(`machine: ${m.cpus} CPU (${m.cpuModel}), ${m.memGiB} GiB RAM, Linux ${m.kernel}, node ${m.node}, ${m.haproxy}, ${m.etcd}`);
  console.log(`load average (1 min) before/after: ${results.loadAverage.before} / ${results.loadAverage.after}\n`);
  console.log(table(results));
  console.log(`\nsummary (README's benchmark table):\n${summaryTable(results)}`);
  if (args.json) {
    const file = fileURLToPath(new URL('./results.json', import.meta.url));
    await writeFile(file, JSON.stringify(results, null, 2) + '\n');
    console.log(`\nwrote ${file}`);
  }
  return Object.keys(results.errors).length ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err);
    process.exit(2);
  },
);
