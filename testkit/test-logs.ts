/**
 * Quiet tests: log output is kept in a buffer per test and printed (on stderr) only when that
 * test fails, so a CI log shows failures, not thousands of JSON lines.
 *
 * What is buffered: the pino lines of updater code running in the test process (src/log.ts's
 * sink is pointed here) and the output of updater processes the test starts (testkit/updater.ts
 * calls `testLog`). Active only inside a `node --test` run (NODE_TEST_CONTEXT is set in each
 * test file's process), so bench and demo, which use the same testkit, log as before (updater
 * processes' output only kept in `proc.output`), also when a test starts them.
 * testkit/index.ts imports it; scripts/matrix.ts and `npm run test:unit` preload it
 * (`--import ./testkit/test-logs.ts`) for unit files that do not use the testkit.
 * TEST_LOGS=all prints everything as it comes (debugging a passing test).
 */
import { afterEach, beforeEach } from 'node:test';
import { Writable } from 'node:stream';
import { setLogFormat } from '../src/log.js';

/** Lines printed for one failed test at most (the latest; earlier ones are counted). */
const MAX_PRINTED = 400;

/** buffer: per test, printed on failure; all: printed as it comes; off: outside a test run. */
// A test's own children (the demo, the bench) inherit NODE_TEST_CONTEXT: only a test file's process buffers.
const inTestFile = process.env.NODE_TEST_CONTEXT !== undefined && /\.test\.[cm]?[jt]s$/.test(process.argv[1] ?? '');
const mode: 'buffer' | 'all' | 'off' = !inTestFile ? 'off' : process.env.TEST_LOGS === 'all' ? 'all' : 'buffer';
const buffer: string[] = [];
let dropped = 0;

/** Adds one line (no trailing newline) to the current test's log. */
export function testLog(line: string): void {
  if (mode !== 'buffer') {
    if (mode === 'all') process.stderr.write(line + '\n');
    return;
  }
  buffer.push(line);
  if (buffer.length > MAX_PRINTED) {
    dropped += buffer.length - MAX_PRINTED;
    buffer.splice(0, buffer.length - MAX_PRINTED);
  }
}

function flush(what: string): void {
  if (buffer.length === 0 && dropped === 0) return;
  const head = `--- log of ${what} (${buffer.length} lines${dropped ? `, ${dropped} earlier ones dropped` : ''}) ---`;
  process.stderr.write(`${head}\n${buffer.join('\n')}\n--- end of log of ${what} ---\n`);
  clear();
}

function clear(): void {
  buffer.length = 0;
  dropped = 0;
}

if (mode === 'buffer') {
  setLogFormat(
    'json',
    new Writable({
      write(chunk: Buffer | string, _enc, done) {
        for (const line of chunk.toString().split('\n')) if (line) testLog(line);
        done();
      },
    }),
  );
  let running = '';
  beforeEach((t) => {
    running = t.name;
  });
  afterEach((t) => {
    running = '';
    // `passed` (Node >= 20.12; not in @types/node 20 yet): unknown on older 20.x, so printed.
    if ((t as { passed?: boolean }).passed === true) clear();
    else flush(`failed test '${t.name}'`);
  });
  // Lines from before/after hooks, or a file that failed outside any test.
  process.once('exit', (code) => {
    if (code !== 0 || (process.exitCode ?? 0) !== 0) flush('the test file outside its tests');
  });
  // scripts/matrix.ts stops a file that runs too long with SIGTERM: show what the running test logged.
  process.once('SIGTERM', () => {
    flush(running ? `test '${running}', running when the file was stopped (SIGTERM)` : 'the test file, stopped (SIGTERM) outside its tests');
    process.exit(1);
  });
}
