/**
 * `node --import tsx bench/profile-start.ts [--services 1000] [--upstreams 10] [--out dir] [--profile]`
 *
 * Without `--profile`: memory only (process.memoryUsage() every 100 ms, V8 heap spaces and
 * /proc smaps after the sync), cheap enough not to skew the cold start much.
 *
 * Where a cold start's time and memory go: the scale measure's registry (services x
 * upstreams in etcd), then the real `haproxy-updater run` from an empty state dir with
 * with `--profile` V8's profilers switched on by bench/profile-hook.mjs. Prints the cold
 * start, the updater's RSS and, with `--profile`, the largest object groups of a heap
 * snapshot taken after the sync (self sizes by constructor, and the largest strings).
 * Profiles go to `--out` (default a temp dir): start.cpuprofile, live.heapprofile and
 * after-sync.heapsnapshot open in Chrome DevTools.
 */
import './env.js';
import { mkdir, readdir, readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { hasExited, sleep, startEtcd, tempDir } from '../testkit/index.js';
import { countLive, etcdClient, log, putMany, rssMiB, serversState, until } from './lib.js';
import { startDaemon, type Args, type Ctx } from './setup.js';

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]] } };
  nodes: number[];
  strings: string[];
}

/** Self size per constructor (objects) or per kind (strings, arrays, code), largest first. */
function summarize(s: Snapshot, top = 15): string {
  const f = s.snapshot.meta.node_fields;
  const width = f.length;
  const iType = f.indexOf('type');
  const iName = f.indexOf('name');
  const iSize = f.indexOf('self_size');
  const types = s.snapshot.meta.node_types[0];
  const groups = new Map<string, { count: number; bytes: number }>();
  const strings: Array<{ bytes: number; text: string }> = [];
  let total = 0;
  for (let i = 0; i < s.nodes.length; i += width) {
    const type = types[s.nodes[i + iType]!]!;
    const size = s.nodes[i + iSize]!;
    total += size;
    const key = type === 'object' || type === 'closure' ? `${type} ${s.strings[s.nodes[i + iName]!]}` : `(${type})`;
    const g = groups.get(key) ?? { count: 0, bytes: 0 };
    g.count++;
    g.bytes += size;
    groups.set(key, g);
    if ((type === 'string' || type === 'concatenated string' || type === 'sliced string') && size > 64 * 1024) {
      strings.push({ bytes: size, text: s.strings[s.nodes[i + iName]!]!.slice(0, 60) });
    }
  }
  const mib = (b: number) => (b / 1048576).toFixed(1);
  const lines = [`heap snapshot: ${mib(total)} MiB in ${s.nodes.length / width} objects`];
  for (const [k, g] of [...groups].sort((a, b) => b[1].bytes - a[1].bytes).slice(0, top)) lines.push(`  ${mib(g.bytes).padStart(7)} MiB ${String(g.count).padStart(8)}  ${k}`);
  strings.sort((a, b) => b.bytes - a.bytes);
  for (const x of strings.slice(0, 8)) lines.push(`  string ${mib(x.bytes)} MiB: ${JSON.stringify(x.text)}...`);
  return lines.join('\n');
}

async function main(): Promise<number> {
  const argv = process.argv.slice(2);
  const opt = (name: string, def: string) => {
    const i = argv.indexOf(name);
    return i >= 0 && argv[i + 1] ? argv[i + 1]! : def;
  };
  const S = Number(opt('--services', '1000'));
  const U = Number(opt('--upstreams', '10'));
  const profile = argv.includes('--profile');
  const out = argv.includes('--out') ? opt('--out', '') : await tempDir('hu-prof-');
  await mkdir(out, { recursive: true });
  const hook = fileURLToPath(new URL('./profile-hook.mjs', import.meta.url));
  const etcd = await startEtcd();
  const client = etcdClient(etcd.endpoint);
  const prefix = '/prof';
  const entries: Array<[string, string]> = [];
  const name = (s: number) => `s${String(s).padStart(4, '0')}`;
  for (let s = 0; s < S; s++) {
    entries.push([`${prefix}/http-services/${name(s)}/domain`, `${name(s)}.scale.test`]);
    for (let j = 0; j < U; j++) entries.push([`${prefix}/http-services/${name(s)}/upstreams/u${j}`, `127.3.${s >> 8}.${s & 255}:${19001 + j}`]);
  }
  await putMany(client, entries, 64);
  const ctx = { args: {} as Args, etcd, client } as Ctx;
  const saved = { ...process.env };
  Object.assign(process.env, { NODE_OPTIONS: `--import ${hook}`, PROFILE_DIR: out, PROFILE_CPU: profile ? '1' : '0' });
  const t = Date.now();
  const d = await startDaemon(ctx, prefix, [], { waitReady: false });
  process.env = saved;
  try {
    const re = /^http-s\d{4}$/;
    let up = 0;
    const synced = await until(
      async () => {
        if (hasExited(d.u.proc) || !existsSync(d.u.adminSocket)) return false;
        if (!up) up = Date.now() - t;
        return countLive(await serversState(d.u.adminSocket), re).configured >= S * U;
      },
      120_000,
      50,
    );
    if (!synced) throw new Error(`no sync within 120 s: ${d.u.proc.output.slice(-10).join('\n')}`);
    const coldMs = Date.now() - t;
    await sleep(1000);
    log(`cold start ${(coldMs / 1000).toFixed(2)} s (HAProxy's socket after ${(up / 1000).toFixed(2)} s), updater RSS ${(await rssMiB(d.u.proc.pid))?.toFixed(0)} MiB`);
    process.kill(d.u.proc.pid, 'SIGUSR2');
    await until(() => existsSync(path.join(out, 'done')), 120_000, 500);
    const mem = JSON.parse(await readFile(path.join(out, 'memory.json'), 'utf8')) as { samples: Array<Record<string, number>>; spaces: unknown[]; smaps: string };
    const peak = (k: string) => Math.max(...mem.samples.map((x) => x[k] ?? 0));
    console.log(`memory peaks during the start (MiB): rss ${peak('rss')}, heapTotal ${peak('heapTotal')}, heapUsed ${peak('heapUsed')}, external ${peak('external')}`);
    console.log(`V8 spaces now: ${JSON.stringify(mem.spaces)}`);
    console.log(mem.smaps.split('\n').filter((l) => /^(Rss|Anonymous|Private_Dirty|Shared_Clean|Private_Clean)/.test(l)).join('; '));
    if (profile) console.log(summarize(JSON.parse(await readFile(path.join(out, 'after-sync.heapsnapshot'), 'utf8')) as Snapshot));
  } finally {
    await d.close();
    client.close();
    await etcd.destroy();
  }
  log(`profiles in ${out}: ${(await readdir(out)).join(', ')}`);
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err);
    process.exit(2);
  },
);
