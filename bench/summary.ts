/**
 * The summary table of issue #10 (README's benchmark section), built from the stable keys of
 * `bench/results.json` only, so every measure's figures drop in where its key is present and
 * show `—` where a run did not take them. `npm run bench` prints it after the full table;
 * `node --import tsx bench/summary.ts [results.json]` prints it for a saved run.
 */
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

type Json = Record<string, unknown>;

/** The value at a dotted path of stable keys, when it is a finite number. */
export function pick(results: unknown, path: string): number | null {
  let v: unknown = results;
  for (const k of path.split('.')) {
    if (v === null || typeof v !== 'object') return null;
    v = (v as Json)[k];
  }
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
}

const fmt = (v: number | null, unit = '') => (v === null ? '—' : `${v >= 100 ? Math.round(v) : v >= 10 ? v.toFixed(0) : v >= 1 ? v.toFixed(1) : v.toFixed(2)}${unit}`);
const pair = (a: number | null, b: number | null, unit: string) => (a === null && b === null ? '—' : `${fmt(a)} / ${fmt(b)}${unit}`);
/** b/a: how many times the baseline's figure is this project's. */
const times = (b: number | null, a: number | null) => (a === null || b === null || a <= 0 ? '—' : `${(b / a).toFixed(b / a >= 10 ? 0 : 1)}x`);

/** First present path of `paths` (a key renamed by a later version of a measure falls back to the older one). */
const first = (r: unknown, ...paths: string[]): number | null => {
  for (const p of paths) {
    const v = pick(r, p);
    if (v !== null) return v;
  }
  return null;
};

export function summaryTable(r: unknown): string {
  const rows: string[][] = [['measure', 'haproxy-updater (a)', 'confd-like baseline (b)', 'b/a', 'floor']];
  const etcdWatch = pick(r, 'convergence.floors.etcdWatchMs.p50');
  const socket = pick(r, 'convergence.floors.socketSetWeightMs.p50');
  const floor = etcdWatch !== null && socket !== null ? `${fmt(etcdWatch + socket)} ms (etcd watch ${fmt(etcdWatch)} + socket ${fmt(socket)})` : '';
  const confd50 = pick(r, 'convergence.confd.convergenceMs.p50');
  const confd99 = pick(r, 'convergence.confd.convergenceMs.p99');
  const conv = (label: string, ...keys: string[]) => {
    const p50 = first(r, ...keys.map((k) => `convergence.${k}.convergenceMs.p50`));
    const p99 = first(r, ...keys.map((k) => `convergence.${k}.convergenceMs.p99`));
    rows.push([`convergence, ${label}: p50 / p99`, pair(p50, p99, ' ms'), pair(confd50, confd99, ' ms'), `${times(confd50, p50)} / ${times(confd99, p99)}`, floor]);
  };
  conv('`probe` (default)', 'probe');
  conv('`check`', 'check', 'hold');
  conv('`immediate`', 'immediate', 'nohold');
  rows.push([
    'convergence at 1000 x 10, `probe`: p50 / p99',
    pair(pick(r, 'scaleConvergence.probe.convergenceMs.p50'), pick(r, 'scaleConvergence.probe.convergenceMs.p99'), ' ms'),
    '',
    '',
    '',
  ]);
  rows.push([
    'churn at 1000 x 10, 5 changes/s: put → HAProxy p50 / p99; updater CPU',
    `${pair(pick(r, 'scaleChurn.latencyMs.p50'), pick(r, 'scaleChurn.latencyMs.p99'), ' ms')}; ${fmt(pick(r, 'scaleChurn.cpuCores'), ' core')}`,
    '',
    '',
    '',
  ]);
  const bu = (side: string, k: string) => pick(r, `burst.${side}.${k}`);
  rows.push([
    'burst of 1000 upstreams: all in HAProxy / all UP',
    pair(bu('updater', 'configuredS'), bu('updater', 'upS'), ' s'),
    pair(bu('confd', 'configuredS'), bu('confd', 'upS'), ' s'),
    `${times(bu('confd', 'configuredS'), bu('updater', 'configuredS'))} / ${times(bu('confd', 'upS'), bu('updater', 'upS'))}`,
    '',
  ]);
  const services = pick(r, 'scale.services');
  const size = services === null ? '1000 x 10' : `${services} x ${pick(r, 'scale.upstreamsPer') ?? '?'}`;
  rows.push([`${size}: cold start → all in HAProxy; updater RSS`, `${fmt(pick(r, 'scale.coldStartS'), ' s')}; ${fmt(pick(r, 'scale.updaterRssMiB'), ' MiB')}`, '', '', '']);
  const split = ['renderMs', 'checkMs', 'reloadMs'].map((k) => pick(r, `scale.newServiceSplit.${k}`));
  const splitText = split.every((v) => v === null) ? '' : ` (render ${fmt(split[0]!)} + \`haproxy -c\` ${fmt(split[1]!)} + reload ${fmt(split[2]!)} ms)`;
  rows.push([`new service at ${size}: put → routed`, `${fmt(pick(r, 'scale.newServiceS'), ' s')}${splitText}`, '', '', '']);
  return rows.map((row, i) => `| ${row.join(' | ')} |${i === 0 ? `\n|${row.map(() => '---').join('|')}|` : ''}`).join('\n');
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const file = process.argv[2] ?? fileURLToPath(new URL('./results.json', import.meta.url));
  console.log(summaryTable(JSON.parse(await readFile(file, 'utf8'))));
}
