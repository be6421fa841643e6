/**
 * The paced load of bench/load.ts as a process, for running inside a network namespace
 * (`ip netns exec <ns> node --import tsx bench/ns-load.ts '<json options>'`). Runs until a
 * line arrives on stdin or stdin closes (or its own bounds are reached), then prints the
 * summary as one JSON line.
 */
import { startPacedLoad, type PacedLoadOptions } from './load.js';

const opts = JSON.parse(process.argv[2] ?? '{}') as PacedLoadOptions;
const load = startPacedLoad(opts);
let stopped = false;
const stop = async () => {
  if (stopped) return;
  stopped = true;
  const summary = await load.stop();
  process.stdout.write(`${JSON.stringify(summary)}\n`);
  process.exit(0);
};
process.stdin.on('data', () => void stop());
process.stdin.on('end', () => void stop());
// Its own bounds: never outlive durationMs by much.
setTimeout(() => void stop(), (opts.durationMs ?? 60_000) + 15_000).unref();
