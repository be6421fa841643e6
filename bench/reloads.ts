/**
 * 3. Structural reloads under load, guard `none` vs guard `iptables`: the real Reloader
 * (state dump, render, `haproxy -c`, rename, guard, master reload, verdict) driven
 * directly, each reload adding one http service, against an HAProxy that runs, like its
 * backend and the load generator, inside a network namespace the benchmark creates and
 * deletes (`ip netns add hu-bench-<random>`), so the iptables rules never touch the
 * machine's own tables. Load: open loop, a new TCP connection per request. Needs root;
 * without it the `none` row runs on the machine's loopback and the `iptables` row is
 * skipped.
 */
import { spawn } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEFAULT_OPTIONS, type HttpService, type Registry } from '../src/model.js';
import { MasterClient, RuntimeClient } from '../src/runtime/index.js';
import { createGuard, defaultSettings, Reloader, renderConfig, writeRendered, type ReloadGuard, type RenderSettings } from '../src/render/index.js';
import { execFileP, freePort, haproxyBin, launchHaproxy, removeDir, sleep, socketCommand, startProcess, stopProcess, tempDir, waitFor, type Proc } from '../testkit/index.js';
import { dist, log, type Dist } from './lib.js';
import type { LoadSummary, PacedLoadOptions } from './load.js';
import type { Ctx } from './setup.js';

export interface GuardRow {
  guard: 'none' | 'iptables';
  netns: boolean;
  skipped?: string;
  load?: LoadSummary;
  /** Reloader.reload() durations (state dump, render, haproxy -c, guard, reload, verdict). */
  reloadMs?: Dist;
  /** Start of guard engage → end of guard release, per reload. */
  guardWindowMs?: Dist;
  /** Master CLI `reload` sent → new worker confirmed in `show proc`. */
  masterReloadMs?: Dist;
  haproxyFailed?: number;
}

export interface ReloadsResult {
  count: number;
  none: GuardRow;
  iptables: GuardRow;
}

const REPO = fileURLToPath(new URL('..', import.meta.url));
const BACKEND_JS = `const http = require('node:http');
http.createServer((q, s) => s.end(q.url === '/health' ? 'ok\\n' : 'ns-backend\\n')).listen(Number(process.argv[1]), '127.0.0.1');`;

function service(name: string): HttpService {
  return { kind: 'http', name, upstreams: new Map(), domains: [`${name}.test`], urlReg: null, sslPassthrough: false, options: { ...DEFAULT_OPTIONS, healthPath: '/health' } };
}
const registry = (svcs: HttpService[]): Registry => ({ revision: '1', http: new Map(svcs.map((s) => [s.name, s])), tcp: new Map() });

export async function reloads(ctx: Ctx): Promise<ReloadsResult> {
  const root = process.getuid?.() === 0;
  const count = ctx.args.reloads;
  if (!root) {
    return {
      count,
      none: await guardRun(ctx, 'none', null),
      iptables: { guard: 'iptables', netns: false, skipped: 'skipped: needs root' },
    };
  }
  const ns = `hu-bench-${randomBytes(4).toString('hex')}`;
  await execFileP('ip', ['netns', 'add', ns]);
  try {
    await execFileP('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    return { count, none: await guardRun(ctx, 'none', ns), iptables: await guardRun(ctx, 'iptables', ns) };
  } finally {
    await execFileP('ip', ['netns', 'del', ns]).catch((err: unknown) => log(`could not delete netns ${ns}: ${String(err)}`));
  }
}

async function guardRun(ctx: Ctx, kind: 'none' | 'iptables', ns: string | null): Promise<GuardRow> {
  const inNs = (argv: string[]): [string, string[]] => (ns ? ['ip', ['netns', 'exec', ns, ...argv]] : [argv[0]!, argv.slice(1)]);
  const dir = await tempDir('hu-bench-reload-');
  const httpPort = ns ? (kind === 'none' ? 8080 : 8081) : await freePort();
  const backendPort = ns ? (kind === 'none' ? 9000 : 9001) : await freePort();
  const settings: RenderSettings = { ...defaultSettings(dir), bindAddress: '127.0.0.1', httpPort, httpsPort: null };
  const cfgPath = path.join(dir, 'haproxy.cfg');
  const masterSocket = path.join(dir, 'master.sock');
  const services = [service('web')];
  const render = () => renderConfig({ registry: registry(services), capacity: new Map(), settings });
  await writeRendered(render(), cfgPath);
  const procs: Proc[] = [];
  try {
    procs.push(startProcess(...inNs([process.execPath, '-e', BACKEND_JS, String(backendPort)])));
    procs.push(await launchHaproxy({ cfgPath, masterSocket, adminSocket: settings.adminSocket, cwd: dir, netns: ns }));
    await socketCommand(settings.adminSocket, `set server http-web/s1 addr 127.0.0.1 port ${backendPort}`);
    await socketCommand(settings.adminSocket, 'set server http-web/s1 state ready');

    const inner = createGuard(kind, ns ? { netns: ns } : {});
    await inner.init();
    // The same guard, timed: from the start of engage() to the end of release() new
    // connections are held off (SYNs dropped) under guard iptables.
    const windows: number[] = [];
    let engagedAt = 0;
    const guard: ReloadGuard = {
      kind: inner.kind,
      init: () => inner.init(),
      engage: async (ports) => {
        engagedAt = performance.now();
        await inner.engage(ports);
      },
      release: async () => {
        await inner.release();
        if (engagedAt) windows.push(performance.now() - engagedAt);
        engagedAt = 0;
      },
    };
    const master = new MasterClient({ path: masterSocket });
    const masterTimes: number[] = [];
    const reloader = new Reloader({
      master: {
        reload: async (o) => {
          const t = performance.now();
          const r = await master.reload(o);
          masterTimes.push(performance.now() - t);
          return r;
        },
        showProc: () => master.showProc(),
      },
      runtime: new RuntimeClient({ path: settings.adminSocket }),
      guard,
      cfgPath,
      haproxyBin: haproxyBin(),
      serverStateFile: settings.serverStateFile,
      guardPorts: () => [httpPort],
      // The port probe would bind in this process's namespace, not HAProxy's.
      probeNewPorts: false,
    });

    const maxMs = ctx.args.reloads * 3000 + 30_000;
    const loadOpts: PacedLoadOptions = {
      url: `http://127.0.0.1:${httpPort}/`,
      host: 'web.test',
      intervalMs: ctx.args.loadIntervalMs,
      maxInFlight: 1024,
      keepAlive: false,
      durationMs: maxMs,
      maxRequests: Math.ceil(maxMs / ctx.args.loadIntervalMs),
    };
    const [cmd, argv] = inNs([process.execPath, '--import', 'tsx', path.join(REPO, 'bench/ns-load.ts'), JSON.stringify(loadOpts)]);
    const loader = spawn(cmd, argv, { cwd: REPO, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    loader.stdout.on('data', (c: Buffer) => (out += c.toString()));
    loader.stderr.on('data', (c: Buffer) => (err += c.toString()));
    const exited = new Promise<void>((r) => loader.once('exit', () => r()));
    const durations: number[] = [];
    try {
      await waitFor(async () => Number(/CumReq: (\d+)/.exec(await socketCommand(settings.adminSocket, 'show info'))?.[1] ?? 0) > 200, {
        what: 'load running',
        timeoutMs: 15_000,
      });
      await sleep(500);
      for (let i = 1; i <= ctx.args.reloads; i++) {
        services.push(service(`a${i}`));
        durations.push((await reloader.reload(render(), [`service-added:http-a${i}`])).durationMs);
        await sleep(300);
      }
      await sleep(1500);
      loader.stdin.end('stop\n');
      await Promise.race([exited, sleep(30_000)]);
    } finally {
      if (loader.exitCode === null) loader.kill('SIGKILL');
    }
    const line = out.trim().split('\n').pop() ?? '';
    if (!line.startsWith('{')) throw new Error(`load generator gave no summary: ${err.slice(-500)}`);
    const proc = await master.showProc();
    await guard.release();
    return { guard: kind, netns: ns !== null, load: JSON.parse(line) as LoadSummary, reloadMs: dist(durations), guardWindowMs: dist(windows), masterReloadMs: dist(masterTimes), haproxyFailed: proc.failed };
  } finally {
    for (const p of procs.reverse()) await stopProcess(p);
    await removeDir(dir);
  }
}
