/**
 * The version matrix of `npm test` (scripts/test.sh): which HAProxy and etcd each leg runs,
 * which test files it runs, and which user-visible scenario each file covers. The README's
 * "Supported versions" table is generated from this definition (`supportedVersionsMarkdown`,
 * checked by test/unit/versions-matrix.test.ts), so it claims exactly what CI runs.
 *
 * Run: node --import tsx scripts/matrix.ts [--leg NAME]... [--results FILE]
 *   env TEST_LEG=NAME[,NAME] does the same as --leg (developers: one leg only).
 * Each leg is labelled in the output with its binaries' versions and its time; each test
 * file runs on its own (node --test, concurrency 1) with HAPROXY_BIN / ETCD_BIN /
 * ETCDCTL_BIN set; its output is shown only when it fails, and within it the logs of its
 * failing tests only (testkit/test-logs.ts). Exit 1 when any file failed.
 * A file longer than TEST_FILE_TIMEOUT_MS (300 s) is stopped, with the log of the test it was
 * running printed, and run once more: a hang costs minutes, not the CI run, and is always shown
 * (the summary counts files that passed only on that second run). Other failures are not retried. (node's --test-timeout is not
 * used: with one process per file, node 20 applies it to the whole file and kills it silently.)
 * Results (leg x file x scenario, seconds) go to --results (default .tmp/matrix-results.json).
 * The 3.x and etcd 3.5 binaries come from scripts/haproxy-versions.sh (cached).
 */
import { execFile, spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);
const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** Scenario (a README column) → the integration files whose tests exercise it. */
export const SCENARIOS: ReadonlyArray<{ name: string; files: readonly string[] }> = [
  { name: 'runtime churn', files: ['runtime-servers', 'runtime-maps', 'e2e'] },
  { name: 'structural reload', files: ['runtime-reload', 'render-reload', 'e2e'] },
  { name: 'refused reload + rollback', files: ['runtime-reload', 'render-reload'] },
  { name: 'guarded reload (iptables)', files: ['render-guard'] },
  { name: 'TLS passthrough + termination', files: ['render-https', 'e2e'] },
  { name: 'certificates at runtime (ssl cert API)', files: ['certs-sync', 'certs-run'] },
  { name: 'tcp', files: ['e2e'] },
  { name: 'drift repair', files: ['e2e'] },
  { name: 'etcd outage', files: ['watch-outage', 'e2e'] },
  { name: 'config goldens pass haproxy -c', files: ['unit:render-golden'] },
  { name: 'version + capabilities (show info, metric)', files: ['versions', 'unit:runtime-capabilities'] },
  // On legs < 3.4 the same file asserts exactly one reload for the new service.
  { name: 'new service without reload (3.4+)', files: ['dynamic-backend', 'unit:reconcile-dynamic'] },
  { name: 'admission probe', files: ['admission'] },
  { name: 'incremental passes + drift repair', files: ['incremental'] },
  { name: 'guardrails: mass-removal hold, ready means serving', files: ['guardrails-hold'] },
  { name: 'guardrails: secrets, registry trust', files: ['guardrails-secrets'] },
  { name: 'guardrails: crash between rename and reload', files: ['guardrails-crash'] },
];

export interface Leg {
  /** What `--leg` selects, e.g. `3.4`. */
  name: string;
  haproxy: { branch: string; source: string; env: string | null };
  etcd: { branch: string; source: string; env: string | null };
  /** `all`, or the files of every scenario. */
  files: 'all' | 'scenarios';
}

export const LEGS: readonly Leg[] = [
  { name: '2.6', haproxy: { branch: '2.6', source: 'Debian bookworm', env: null }, etcd: { branch: '3.4', source: 'Debian bookworm', env: null }, files: 'all' },
  { name: '3.0', haproxy: { branch: '3.0', source: 'Debian trixie', env: 'HAPROXY_BIN_3_0' }, etcd: { branch: '3.5', source: 'Debian sid', env: 'ETCD_BIN' }, files: 'scenarios' },
  { name: '3.2', haproxy: { branch: '3.2', source: 'Debian sid', env: 'HAPROXY_BIN_3_2' }, etcd: { branch: '3.5', source: 'Debian sid', env: 'ETCD_BIN' }, files: 'scenarios' },
  { name: '3.4', haproxy: { branch: '3.4', source: 'Debian experimental', env: 'HAPROXY_BIN_3_4' }, etcd: { branch: '3.5', source: 'Debian sid', env: 'ETCD_BIN' }, files: 'scenarios' },
];

/** A file id (`e2e`, `unit:render-golden`) → its path. */
export function filePath(id: string): string {
  return id.startsWith('unit:') ? `test/unit/${id.slice(5)}.test.ts` : `test/integration/${id}.test.ts`;
}

export function scenarioFiles(): string[] {
  return [...new Set(SCENARIOS.flatMap((s) => s.files))];
}

/** The README table: one row per leg, one column per scenario; ✓ = run by `npm test` on that leg. */
export function supportedVersionsMarkdown(): string {
  const covered = new Set(scenarioFiles());
  const head = ['HAProxy', 'etcd', ...SCENARIOS.map((s) => s.name)];
  const rows = LEGS.map((leg) => {
    const runs = (f: string) => leg.files === 'all' || covered.has(f);
    return [
      `${leg.haproxy.branch} (${leg.haproxy.source})`,
      `${leg.etcd.branch} (${leg.etcd.source})`,
      ...SCENARIOS.map((s) => (s.files.every(runs) ? '✓' : '–')),
    ];
  });
  const line = (cells: string[]) => `| ${cells.join(' | ')} |`;
  return [line(head), line(head.map(() => '---')), ...rows.map(line)].join('\n');
}

// ------------------------------------------------------------------------------- runner

interface FileResult {
  file: string;
  ok: boolean;
  seconds: number;
}

async function allFiles(): Promise<string[]> {
  const ids: string[] = [];
  for (const [dir, prefix] of [['test/unit', 'unit:'], ['test/integration', '']] as const) {
    for (const f of (await readdir(path.join(ROOT, dir))).sort()) {
      if (f.endsWith('.test.ts')) ids.push(`${prefix}${f.slice(0, -'.test.ts'.length)}`);
    }
  }
  return ids;
}

async function binaries(): Promise<Record<string, string>> {
  const { stdout } = await execFileP('bash', [path.join(ROOT, 'scripts/haproxy-versions.sh')], { maxBuffer: 1 << 20 });
  const env: Record<string, string> = {};
  for (const line of stdout.split('\n')) {
    const m = /^([A-Z0-9_]+)=(.+)$/.exec(line);
    if (m) env[m[1]!] = m[2]!;
  }
  return env;
}

async function versionOf(cmd: string, args: string[], re: RegExp): Promise<string> {
  try {
    const { stdout } = await execFileP(cmd, args);
    return re.exec(stdout)?.[1] ?? 'unknown';
  } catch {
    return 'not runnable';
  }
}

/** The spec reporter's closing counts (`ℹ pass 12`); zeros when the file died before them. */
function testCounts(output: string): { pass: number; fail: number; skipped: number } {
  const count = (what: string) => Number(new RegExp(`^ℹ ${what} (\\d+)$`, 'm').exec(output)?.[1] ?? 0);
  return { pass: count('pass'), fail: count('fail'), skipped: count('skipped') };
}

/** A whole file longer than this is stopped and failed (the longest takes about a minute). */
const FILE_TIMEOUT_MS = Number(process.env.TEST_FILE_TIMEOUT_MS ?? 300_000);

/** Processes (pid, command) whose parent (`ppid`) or process group (`pgrp`) is `id`, from /proc. */
function processesOf(field: 'ppid' | 'pgrp', id: number): Array<{ pid: number; comm: string }> {
  const out: Array<{ pid: number; comm: string }> = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
      // After "(comm) ": state ppid pgrp ...
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (rest[0] !== 'Z' && Number(rest[field === 'ppid' ? 1 : 2]) === id) out.push({ pid: Number(e), comm: stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')) });
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

export function runFile(file: string, env: NodeJS.ProcessEnv): Promise<{ ok: boolean; timedOut: boolean; output: string }> {
  return new Promise((resolve) => {
    // test-logs: in-process and updater logs are printed only for a failing test.
    // Its own process group, so a file that hangs is stopped with everything it started in it.
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', '--import', './testkit/test-logs.ts', '--test', '--test-concurrency=1', '--test-reporter=spec', file],
      { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true },
    );
    let output = '';
    let timedOut = false;
    child.stdout.on('data', (b: Buffer) => (output += b.toString('utf8')));
    child.stderr.on('data', (b: Buffer) => (output += b.toString('utf8')));
    const timer = setTimeout(() => {
      timedOut = true;
      output += `\nmatrix: ${file} still running after ${FILE_TIMEOUT_MS / 1000} s: stopping it (SIGTERM to the test file's process, SIGKILL to its group 10 s later)\n`;
      // The file's process flushes the running test's log on SIGTERM (test-logs.ts); the runner then reports it.
      for (const p of processesOf('ppid', child.pid!)) signal(p.pid, 'SIGTERM');
      setTimeout(() => signal(-child.pid!, 'SIGKILL'), 10_000).unref();
    }, FILE_TIMEOUT_MS);
    // On exit, not on close: a leftover grandchild holding the pipe must not hang the matrix.
    child.on('exit', (code) => {
      clearTimeout(timer);
      // What the file left running in its group is a leak: named, then stopped.
      const left = processesOf('pgrp', child.pid!);
      if (left.length) {
        console.log(`  matrix: ${file} left ${left.map((p) => `${p.comm} (pid ${p.pid})`).join(', ')} running: killed`);
        signal(-child.pid!, 'SIGKILL');
      }
      const done = () => resolve({ ok: code === 0 && !timedOut, timedOut, output });
      if (child.stdout.readableEnded && child.stderr.readableEnded) return done();
      const t = setTimeout(done, 2000);
      child.on('close', () => {
        clearTimeout(t);
        done();
      });
    });
  });
}

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  const wanted = new Set((process.env.TEST_LEG ?? '').split(',').filter(Boolean));
  let resultsPath = path.join(ROOT, '.tmp/matrix-results.json');
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--leg' && args[i + 1]) wanted.add(args[++i]!);
    else if (args[i] === '--results' && args[i + 1]) resultsPath = path.resolve(args[++i]!);
    else {
      console.error(`matrix: unknown argument '${args[i]}' (expected --leg NAME or --results FILE)`);
      return 2;
    }
  }
  for (const w of wanted) {
    if (!LEGS.some((l) => l.name === w)) {
      console.error(`matrix: unknown leg '${w}' (legs: ${LEGS.map((l) => l.name).join(', ')})`);
      return 2;
    }
  }
  const legs = LEGS.filter((l) => wanted.size === 0 || wanted.has(l.name));
  const bins = legs.some((l) => l.haproxy.env || l.etcd.env) ? await binaries() : {};
  const all = await allFiles();
  const report: unknown[] = [];
  let failed = 0;
  const tests = { pass: 0, fail: 0, skipped: 0 };
  const summary: string[] = [];
  const passedOnRetry: string[] = [];
  for (const leg of legs) {
    const env: NodeJS.ProcessEnv = { ...process.env };
    delete env.HAPROXY_BIN;
    delete env.ETCD_BIN;
    delete env.ETCDCTL_BIN;
    if (leg.haproxy.env) env.HAPROXY_BIN = bins[leg.haproxy.env];
    if (leg.etcd.env) {
      env.ETCD_BIN = bins.ETCD_BIN;
      env.ETCDCTL_BIN = bins.ETCDCTL_BIN;
    }
    const haproxy = await versionOf(env.HAPROXY_BIN ?? 'haproxy', ['-v'], /version (\S+)/);
    const etcd = await versionOf(env.ETCD_BIN ?? 'etcd', ['--version'], /etcd Version: (\S+)/);
    const label = `leg ${leg.name}: HAProxy ${haproxy} (${leg.haproxy.source}) + etcd ${etcd} (${leg.etcd.source})`;
    console.log(`\n=== ${label}`);
    const files = leg.files === 'all' ? all : scenarioFiles();
    const started = performance.now();
    const results: FileResult[] = [];
    for (const id of files) {
      const t0 = performance.now();
      let r = await runFile(filePath(id), env);
      if (r.timedOut) {
        console.log(`  HUNG ${filePath(id)}: stopped after ${FILE_TIMEOUT_MS / 1000} s; its output, then a second run:`);
        console.log(r.output.replace(/^/gm, `  [${leg.name} hung] `));
        r = await runFile(filePath(id), env);
        if (r.ok) passedOnRetry.push(`${leg.name}:${id}`);
      }
      const seconds = Math.round((performance.now() - t0) / 100) / 10;
      results.push({ file: id, ok: r.ok, seconds });
      const c = testCounts(r.output);
      tests.pass += c.pass;
      tests.skipped += c.skipped;
      // A file that failed without reaching its counts (a crash on import) still counts as one failure.
      tests.fail += r.ok ? c.fail : Math.max(1, c.fail);
      console.log(`  ${r.ok ? 'ok  ' : 'FAIL'} ${filePath(id)} (${seconds} s)`);
      if (!r.ok) {
        failed++;
        console.log(r.output.replace(/^/gm, `  [${leg.name}] `));
      }
    }
    const seconds = Math.round((performance.now() - started) / 100) / 10;
    const legOk = results.every((r) => r.ok);
    const scenarios = Object.fromEntries(
      SCENARIOS.map((s) => [s.name, s.files.every((f) => results.some((r) => r.file === f && r.ok)) ? 'pass' : s.files.some((f) => results.some((r) => r.file === f)) ? 'fail' : 'not run']),
    );
    report.push({ leg: leg.name, haproxy, etcd, ok: legOk, seconds, scenarios, files: results });
    summary.push(`  ${legOk ? 'ok  ' : 'FAIL'} leg ${leg.name} (HAProxy ${haproxy}, etcd ${etcd}): ${results.length} files in ${seconds} s`);
  }
  await mkdir(path.dirname(resultsPath), { recursive: true });
  await writeFile(resultsPath, JSON.stringify({ date: new Date().toISOString(), legs: report }, null, 2) + '\n');
  console.log(`\n=== matrix summary (results: ${path.relative(ROOT, resultsPath)})\n${summary.join('\n')}`);
  // The plain closing line CI reads: tests over every leg.
  if (passedOnRetry.length) console.log(`\nmatrix: hung once, passed on the second run: ${passedOnRetry.join(', ')}`);
  console.log(`\nmatrix: ${tests.pass} passed, ${tests.fail} failed, ${tests.skipped} skipped`);
  return failed ? 1 : 0;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().then(
    (code) => process.exit(code),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}
