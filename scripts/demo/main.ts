/**
 * `npm run demo`: the main job of haproxy-updater, live, on this machine.
 *
 * Starts etcd, the updater with a managed HAProxy (temp state dir, loopback ports), a few
 * small HTTP apps that register themselves with the real `haproxy-updater register`, sends
 * steady bounded traffic through HAProxy and plays a scripted story (scale up/down, drain,
 * new domain, new service, etcd outage). Reloads are read from HAProxy's own master CLI
 * (`show proc`), not from the updater. Ends by itself (or on Ctrl-C), cleans up every
 * process and prints a summary; the last line is machine-readable (`DEMO-SUMMARY {json}`).
 *
 *   npm run demo                      # ~60 s story
 *   npm run demo -- --short           # ~20 s (what the test runs)
 *   npm run demo -- --duration 90     # longer dwell between steps
 *   npm run demo -- --cluster         # two load balancers, 3-member etcd, leader killed (root)
 *   npm run demo -- --keep            # leave the stack running for exploration (Ctrl-C ends)
 *   npm run demo -- --haproxy-bin /opt/haproxy-3.0/sbin/haproxy
 *
 * Exit code 0 when no request failed and no reload happened for a membership change; 1
 * otherwise; 2 for bad arguments; 130 after Ctrl-C (SIGINT/SIGTERM), within 3 s.
 *
 * Modules: options (arguments), screen (terminal output), traffic (the request loops),
 * registrars (app instances and their `register` children), stack (processes, measurements,
 * clean-up, summary), story (the six steps).
 */
import { restoreLogLevel } from './quiet.js';
import { BIN_ENV, haproxyBin, isolateChildren } from '../../testkit/index.js';
import { parseOptions, usage, type Options } from './options.js';
import { Demo } from './stack.js';
import { ClusterDemo } from './cluster.js';

async function main(): Promise<number> {
  let o: Options | null;
  try {
    o = parseOptions(process.argv.slice(2));
    if (!o) {
      process.stdout.write(usage() + '\n');
      return 0;
    }
    if (o.haproxyBin) process.env[BIN_ENV.haproxy] = o.haproxyBin;
    haproxyBin(); // a missing executable is a usage error, before anything starts
  } catch (err) {
    process.stderr.write(`demo: ${(err as Error).message}\n`);
    return 2;
  }
  restoreLogLevel();
  // Children in their own process group: a terminal's Ctrl-C reaches only the demo, which
  // then stops the traffic before the processes it goes through.
  isolateChildren(true);
  const demo = o.cluster ? new ClusterDemo(o) : new Demo(o);
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    if (++signals === 1) demo.abort(sig);
    // Again: at once; testkit SIGKILLs every child it still tracks when this process exits.
    else process.exit(130);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  // Hard bound on the whole run (story + clean-up), in case something hangs.
  const hardMs = (o.durationS + 180) * 1000 + (o.keep ? o.keepMaxS * 1000 : 0);
  const hard = setTimeout(() => {
    process.stderr.write(`demo: still running after ${Math.round(hardMs / 1000)} s; giving up\n`);
    process.exit(1);
  }, hardMs);
  hard.unref();
  const code = await demo.run();
  clearTimeout(hard);
  return code;
}

process.exit(await main());
