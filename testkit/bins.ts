/**
 * The one owner of "which HAProxy / etcd / etcdctl": tests, bench and demo take the
 * executables from `HAPROXY_BIN`, `ETCD_BIN`, `ETCDCTL_BIN`, else by name on PATH (with
 * /usr/sbin and /sbin added: Debian installs haproxy there). Read at each call, so a
 * caller's `--haproxy-bin` (which sets the env var) applies.
 */
import { accessSync, constants, statSync } from 'node:fs';
import path from 'node:path';
import { execFileP } from './process.js';

const SBIN = ['/usr/sbin', '/sbin'];
// Children (the updater, `ip netns exec`) look executables up on PATH too.
for (const dir of SBIN) {
  if (!(process.env.PATH ?? '').split(':').includes(dir)) process.env.PATH = `${process.env.PATH ?? ''}:${dir}`;
}

/** Tool → the environment variable that overrides it. */
export const BIN_ENV = Object.freeze({ haproxy: 'HAPROXY_BIN', etcd: 'ETCD_BIN', etcdctl: 'ETCDCTL_BIN' });
export type Tool = keyof typeof BIN_ENV;

function isExecutable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return statSync(file).isFile();
  } catch {
    return false;
  }
}

/** Absolute path of `tool`'s executable; a clear error naming the env var when there is none. */
export function bin(tool: Tool): string {
  const envName = BIN_ENV[tool];
  const set = process.env[envName]?.trim();
  const name = set || tool;
  if (name.includes('/')) {
    const abs = path.resolve(name);
    if (isExecutable(abs)) return abs;
    throw new Error(`${envName}: '${name}' is not an executable file`);
  }
  for (const dir of (process.env.PATH ?? '').split(':')) {
    if (dir && isExecutable(path.join(dir, name))) return path.join(dir, name);
  }
  throw new Error(`${envName}: no executable '${name}' on PATH; install ${tool} or set ${envName} to its path`);
}

export const haproxyBin = (): string => bin('haproxy');
export const etcdBin = (): string => bin('etcd');
export const etcdctlBin = (): string => bin('etcdctl');

export interface ToolVersion {
  tool: Tool;
  path: string;
  /** First line of the tool's version output, without HAProxy's URL tail. */
  version: string;
}

const VERSION_ARGS: Record<Tool, string[]> = { haproxy: ['-v'], etcd: ['--version'], etcdctl: ['version'] };

/** The versions of the executables in use (what bench and demo print). */
export async function toolVersions(tools: readonly Tool[] = ['haproxy', 'etcd', 'etcdctl']): Promise<ToolVersion[]> {
  return Promise.all(
    tools.map(async (tool) => {
      const file = bin(tool);
      const { stdout } = await execFileP(file, VERSION_ARGS[tool], { env: { ...process.env, ETCDCTL_API: '3' } });
      const version = (stdout.split('\n')[0] ?? '').trim().replace(/ - https?:.*$/, '');
      return { tool, path: file, version };
    }),
  );
}

/** One line: `HAProxy version 2.6.12 (/usr/sbin/haproxy); etcd Version: 3.4.23 (/usr/bin/etcd); …`. */
export function versionsLine(versions: readonly ToolVersion[]): string {
  return versions.map((v) => `${v.version} (${v.path})`).join('; ');
}
