/**
 * Child processes of tests, bench and demo: started with argument arrays, tracked by PID,
 * stopped by PID (SIGTERM, then SIGKILL), and SIGKILLed as a last resort when this process
 * exits.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { waitFor } from './wait.js';

const execFileRaw = promisify(execFile);
/**
 * promisified execFile, bounded: a command still running after 120 s (or the caller's
 * `timeout`) is SIGKILLed and rejects, so a stuck tool fails its test instead of hanging it.
 */
export const execFileP = ((cmd: string, args?: readonly string[] | null, opts?: Record<string, unknown>) =>
  execFileRaw(cmd, args ?? [], { timeout: 120_000, killSignal: 'SIGKILL', ...opts })) as unknown as typeof execFileRaw;
/** One liveness rule for tests and the updater's state-dir lock. */
export { pidAlive } from '../src/daemon/lock.js';

const tracked = new Set<ChildProcess>();
let ownGroup = false;

/**
 * From now on, start children in their own process group (default off): a terminal's Ctrl-C
 * then reaches only this process, which stops them in its own order. The exit hook below
 * still kills them if this process ends first.
 */
export function isolateChildren(on: boolean): void {
  ownGroup = on;
}
process.once('exit', () => {
  for (const child of tracked) signalPid(child.pid, 'SIGKILL');
});

export interface Proc {
  readonly child: ChildProcess;
  readonly pid: number;
  /** Lines of stdout+stderr (last 500), for diagnostics. */
  readonly output: string[];
}

export function startProcess(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Proc {
  const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'], detached: ownGroup });
  // Without a listener a failed spawn (ENOENT) would be an uncaught 'error' event.
  child.once('error', () => undefined);
  if (!child.pid) throw new Error(`could not start ${cmd}`);
  tracked.add(child);
  const output: string[] = [];
  const collect = (buf: Buffer) => {
    for (const line of buf.toString('utf8').split('\n')) {
      if (line) output.push(line);
    }
    if (output.length > 500) output.splice(0, output.length - 500);
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  child.once('exit', () => tracked.delete(child));
  return { child, pid: child.pid, output };
}

export function hasExited(proc: Proc): boolean {
  return proc.child.exitCode !== null || proc.child.signalCode !== null;
}

/** SIGTERM (or `signal`), then SIGKILL after `graceMs`; resolves when the process has exited. */
export async function stopProcess(proc: Proc, graceMs = 3000, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  const { child } = proc;
  if (hasExited(proc)) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill(signal);
  const timer = graceMs > 0 ? setTimeout(() => child.kill('SIGKILL'), graceMs) : null;
  if (graceMs <= 0) child.kill('SIGKILL');
  await exited;
  if (timer) clearTimeout(timer);
}

/** SIGKILL and wait for the exit. */
export async function killProcess(proc: Proc): Promise<void> {
  await stopProcess(proc, 0, 'SIGKILL');
}

/** Stops every child still running that this process started here (e.g. one still starting up). */
export async function stopAllProcesses(graceMs = 1000): Promise<void> {
  await Promise.all(
    [...tracked].map(async (child) => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    }),
  );
}

/** Sends `signal` to `pid`; false when there is no such process. */
export function signalPid(pid: number | undefined, signal: NodeJS.Signals): boolean {
  if (!pid) return false;
  try {
    process.kill(pid, signal);
    return true;
  } catch {
    return false;
  }
}

/** True when `pid` runs (not a zombie) and its command name starts with `name` (guards against PID reuse). */
export function isProcess(pid: number, name: string): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && readFileSync(`/proc/${pid}/comm`, 'utf8').trim().startsWith(name);
  } catch {
    return false;
  }
}

/**
 * Polls `ready` until it is true; fails at once when `proc` exits, and stops `proc` (by PID)
 * when it does not get ready in time. Errors carry the process's last output lines.
 */
export async function waitReady(proc: Proc, what: string, ready: () => Promise<boolean>, o: { timeoutMs?: number; intervalMs?: number } = {}): Promise<void> {
  const outcome = await waitFor(async () => (hasExited(proc) ? 'exited' : (await ready()) && 'ready'), {
    timeoutMs: o.timeoutMs ?? 10_000,
    intervalMs: o.intervalMs ?? 50,
    what,
  }).catch(async (err: Error) => {
    await stopProcess(proc, 500);
    throw new Error(`${err.message}\n${proc.output.slice(-20).join('\n')}`, { cause: err });
  });
  if (outcome === 'exited') {
    throw new Error(`${what}: the process exited (${proc.child.exitCode ?? proc.child.signalCode})\n${proc.output.slice(-20).join('\n')}`);
  }
}
