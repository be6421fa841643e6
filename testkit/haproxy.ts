/**
 * Real HAProxy for tests, bench and demo: a master-worker process from a config text, a raw
 * socket call for readiness and independent assertions, and HAProxy's own view of itself
 * read through `src/runtime`'s parsers (`show proc`, `show servers state`).
 */
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { parseServersState, parseShowProc, RuntimeClient, showServersState, isDrain, isMaint, SRV_OP, type ServerStateRow } from '../src/runtime/index.js';
import { haproxyBin } from './bins.js';
import { execFileP, signalPid, startProcess, stopProcess, waitReady, type Proc } from './process.js';
import { tempDir } from './resources.js';

export interface HaproxyHandle {
  readonly dir: string;
  readonly cfgPath: string;
  readonly masterSocket: string;
  /** Path where configs rendered by `haproxyTestConfig` put the admin socket. */
  readonly adminSocket: string;
  readonly proc: Proc;
  /** Master PID. */
  readonly pid: number;
  stop(): Promise<void>;
}

/**
 * Starts `$HAPROXY_BIN -W -S <dir>/master.sock,level,admin -f <dir>/haproxy.cfg` with the given
 * config text; `{{DIR}}` in it is replaced by the temp dir. Resolves when the admin
 * socket answers (if the config declares `{{DIR}}/admin.sock`) or the master does.
 */
export async function startHaproxy(config: string, opts: { dir?: string } = {}): Promise<HaproxyHandle> {
  const dir = opts.dir ?? (await tempDir('hu-haproxy-'));
  const cfgPath = path.join(dir, 'haproxy.cfg');
  const masterSocket = path.join(dir, 'master.sock');
  const adminSocket = path.join(dir, 'admin.sock');
  await writeFile(cfgPath, config.replaceAll('{{DIR}}', dir));
  // Map files named in the config must exist before HAProxy starts.
  for (const m of config.matchAll(/\{\{DIR\}\}\/([\w.-]+\.map)/g)) {
    const mapPath = path.join(dir, m[1] ?? '');
    if (!existsSync(mapPath)) await writeFile(mapPath, '');
  }
  await execFileP(haproxyBin(), ['-c', '-f', cfgPath]).catch((err: { stderr?: string }) => {
    throw new Error(`test config invalid: ${err.stderr || String(err)}`);
  });
  const proc = await launchHaproxy({ cfgPath, masterSocket, adminSocket: config.includes('{{DIR}}/admin.sock') ? adminSocket : undefined, cwd: dir });
  return {
    dir,
    cfgPath,
    masterSocket,
    adminSocket,
    proc,
    pid: proc.pid,
    stop: async () => {
      // SIGTERM: the master stops its workers; SIGKILL after 3 s.
      await stopProcess(proc, 3000);
    },
  };
}

export interface LaunchOptions {
  cfgPath: string;
  /** Where `-S` puts the master CLI. */
  masterSocket: string;
  /** Also wait until this admin socket answers `show info`. */
  adminSocket?: string;
  cwd: string;
  /** Run inside this network namespace (`ip netns exec`; needs root). Default: none. */
  netns?: string | null;
}

/**
 * Starts `haproxy -W -S <masterSocket>,level,admin -f <cfgPath>` and resolves when the
 * master lists a worker and the admin socket (if given) answers; stops it on failure.
 */
export async function launchHaproxy(o: LaunchOptions): Promise<Proc> {
  const argv = [haproxyBin(), '-W', '-S', `${o.masterSocket},level,admin`, '-f', o.cfgPath];
  const proc = o.netns ? startProcess('ip', ['netns', 'exec', o.netns, ...argv], { cwd: o.cwd }) : startProcess(argv[0]!, argv.slice(1), { cwd: o.cwd });
  await waitReady(proc, 'haproxy sockets', async () => {
    // Both must answer: the master socket can refuse for a moment after the worker is up.
    const procList = await socketCommand(o.masterSocket, 'show proc');
    const info = o.adminSocket ? await socketCommand(o.adminSocket, 'show info') : 'Pid:';
    return procList.includes('worker') && info.includes('Pid:');
  });
  return proc;
}

/**
 * A minimal raw socket call for the harness itself (readiness, assertions independent of
 * src/runtime): sends one line, half-closes, reads to EOF.
 */
export function socketCommand(socketPath: string, command: string, timeoutMs = 3000): Promise<string> {
  return new Promise((resolve, reject) => {
    if (!existsSync(socketPath)) return reject(new Error(`no socket ${socketPath}`));
    const sock = net.createConnection(socketPath);
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => sock.destroy(new Error(`timeout: ${command}`)), timeoutMs);
    sock.on('connect', () => sock.end(command + '\n'));
    sock.on('data', (c) => chunks.push(c));
    sock.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    sock.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks).toString('utf8'));
    });
  });
}

/**
 * A small HAProxy config for runtime tests: admin socket in the temp dir, server-state
 * file, one HTTP frontend on `httpPort` routing by a hosts map to backends that each have
 * `slots` template slots declared as the notes prescribe.
 */
export function haproxyTestConfig(o: { httpPort: number; backends: string[]; slots?: number; extra?: string }): string {
  const slots = o.slots ?? 4;
  const backends = o.backends
    .map(
      (b) => `backend ${b}
    balance roundrobin
    server-template s 1-${slots} slot.invalid:1 check disabled init-addr last,0.0.0.0
`,
    )
    .join('\n');
  return `global
    stats socket {{DIR}}/admin.sock mode 600 level admin
    server-state-file {{DIR}}/server-state
    stats timeout 10s
defaults
    mode http
    load-server-state-from-file global
    default-server inter 1s fastinter 200ms downinter 1s fall 2 rise 2
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend fe
    bind 127.0.0.1:${o.httpPort}
    use_backend %[req.hdr(host),field(1,:),lower,map({{DIR}}/hosts.map,no-route)]
backend no-route
    http-request return status 503 content-type text/plain string "no route"
${backends}
${o.extra ?? ''}
`;
}

export interface MasterView {
  masterPid: number;
  /** Reloads of the master since start (HAProxy's own counter). */
  reloads: number;
  failed: number;
  /** Current workers. */
  workers: number[];
  /** Workers of earlier generations still finishing connections. */
  oldWorkers: number[];
}

/** HAProxy's own view (not the updater's counters): `show proc` on the master CLI. */
export async function masterView(masterSocket: string): Promise<MasterView> {
  const p = parseShowProc(await socketCommand(masterSocket, 'show proc'));
  return { masterPid: p.masterPid, reloads: p.reloads, failed: p.failed, workers: p.workers.map((w) => w.pid), oldWorkers: p.oldWorkers.map((w) => w.pid) };
}

/** Kills the HAProxy master and its workers (old ones too) left behind by a test, by PID. */
export async function killHaproxy(masterSocket: string): Promise<void> {
  const view = await masterView(masterSocket).catch(() => null);
  if (!view) return;
  for (const pid of [view.masterPid, ...view.workers, ...view.oldWorkers]) signalPid(pid, 'SIGKILL');
}

/** `show servers state` over the admin socket, parsed by `src/runtime`. */
export async function readServers(adminSocket: string, timeoutMs = 10_000): Promise<ServerStateRow[]> {
  const rt = new RuntimeClient({ path: adminSocket }, { timeoutMs });
  return parseServersState(await rt.run(showServersState()));
}

/** What a server slot is doing, from its state row (flags read by `src/runtime`). */
export type SlotUse = 'free' | 'maint' | 'drain' | 'up' | 'down';

export function slotUse(row: ServerStateRow): SlotUse {
  if (row.srvAddr === '0.0.0.0' || row.srvAddr === '::' || row.srvAddr === '-') return 'free';
  if (isMaint(row)) return 'maint';
  if (isDrain(row)) return 'drain';
  return row.srvOpState === SRV_OP.RUNNING ? 'up' : 'down';
}
