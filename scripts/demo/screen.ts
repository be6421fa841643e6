/**
 * The demo's terminal: persistent lines (`say`, `caption`) above a live status table that is
 * redrawn in place on a TTY, or one plain status line every 2 s otherwise.
 */

export const TTY = Boolean(process.stdout.isTTY);

type Paint = (s: string) => string;
const plain: Paint = (s) => s;
const ansi = (code: number): Paint => (s) => `\x1b[${code}m${s}\x1b[0m`;

/** Bold, dim, green, red, yellow, cyan (no colours when stdout is not a TTY). */
export const C: Record<'b' | 'dim' | 'g' | 'r' | 'y' | 'c', Paint> = TTY
  ? { b: ansi(1), dim: ansi(2), g: ansi(32), r: ansi(31), y: ansi(33), c: ansi(36) }
  : { b: plain, dim: plain, g: plain, r: plain, y: plain, c: plain };

const t0 = Date.now();
/** Seconds since the demo started, right-aligned. */
export const elapsed = (): string => ((Date.now() - t0) / 1000).toFixed(1).padStart(5);

let tableLines = 0;
let tableText: (() => string[]) | null = null;

function clearTable(): void {
  if (TTY && tableLines > 0) process.stdout.write(`\x1b[${tableLines}A\x1b[0J`);
  tableLines = 0;
}

/** Redraws the live table (TTY only). */
export function drawTable(): void {
  if (!TTY || !tableText) return;
  clearTable();
  const lines = tableText();
  process.stdout.write(lines.join('\n') + '\n');
  tableLines = lines.length;
}

/** Shows `render`'s lines as the live table from now on; null removes it. */
export function setTable(render: (() => string[]) | null): void {
  clearTable();
  tableText = render;
}

/** A persistent line above the live table. */
export function say(msg: string): void {
  clearTable();
  process.stdout.write(`${C.dim(`[${elapsed()}s]`)} ${msg}\n`);
  drawTable();
}

/** A step heading with its explanation. */
export function caption(step: number, title: string, note: string): void {
  clearTable();
  process.stdout.write(`\n${C.dim(`[${elapsed()}s]`)} ${C.b(C.c(`STEP ${step}: ${title}`))}\n${' '.repeat(9)}${C.dim(note)}\n`);
  drawTable();
}

/** Lines written as they are (the --keep help, the summary). */
export function print(lines: readonly string[]): void {
  clearTable();
  process.stdout.write(lines.join('\n') + '\n');
}

// ---------------------------------------------------------------- status views

export interface HostCount {
  ok: number;
  failed: number;
  failures: Record<string, number>;
}

/** Upstreams of one service as HAProxy reports them. */
export interface UpstreamCount {
  up: number;
  drain: number;
  /** Configured but not (yet) UP. */
  other: number;
}

/** What the live table and the plain status line show. */
export interface StatusView {
  step: number;
  stepTitle: string;
  hosts: ReadonlyMap<string, HostCount>;
  reloads: { membership: number; structural: number; setup: number };
  runtimeCommands: number;
  etcdState: string;
  lastConvergence: string;
  upstreams: ReadonlyMap<string, UpstreamCount>;
}

function upstreamText(v: StatusView): string {
  const parts = [...v.upstreams.entries()].map(([svc, e]) => `${svc} ${e.up} up${e.drain ? ` +${e.drain} drain` : ''}${e.other ? ` +${e.other} starting` : ''}`);
  return parts.join(', ') || '-';
}

export function statusTable(v: StatusView): string[] {
  const w = 64;
  const bar = C.dim('─'.repeat(w));
  const lines = [bar, `${C.b(`step ${v.step}/6`)} ${v.stepTitle}`.padEnd(w) + C.dim(`  t=${elapsed().trim()}s`)];
  lines.push(C.dim('host               ok        failed'));
  for (const [h, s] of v.hosts) {
    lines.push(`${h.padEnd(18)} ${String(s.ok).padEnd(9)} ${s.failed ? C.r(String(s.failed)) : C.g('0')}${s.failed ? C.dim(' ' + JSON.stringify(s.failures)) : ''}`);
  }
  const mr = v.reloads.membership;
  lines.push(
    `reloads (HAProxy show proc)  membership: ${mr ? C.r(String(mr)) : C.g('0')}  structural: ${v.reloads.structural}  set-up: ${v.reloads.setup}`,
    `runtime API commands         ${v.runtimeCommands}`,
    `etcd (updater's view)        ${v.etcdState === 'watching' ? C.g(v.etcdState) : C.y(v.etcdState)}`,
    `convergence, last change     ${v.lastConvergence}`,
    `upstreams in HAProxy         ${upstreamText(v)}`,
    bar,
  );
  return lines;
}

export function statusLine(v: StatusView): string {
  const hosts = [...v.hosts].map(([h, s]) => `${h.replace('.localhost', '')} ${s.ok}/${s.failed}`).join(' ');
  return `[${elapsed()}s] step ${v.step} | ok/failed ${hosts || '-'} | reloads membership ${v.reloads.membership} structural ${v.reloads.structural} | runtime cmds ${v.runtimeCommands} | etcd ${v.etcdState} | last convergence ${v.lastConvergence} | upstreams ${upstreamText(v)}`;
}
