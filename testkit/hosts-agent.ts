/**
 * What hosts.ts runs inside a test host (`ip netns exec <ns> node --import tsx hosts-agent.ts …`):
 *   upstream '{"host","ports":[…]}'   the harness's HTTP backend on each port of the host's
 *       address, answering `<host>:<port>`, until SIGTERM;
 *   load '{"targets":[{url,host}],"concurrency","durationMs","maxRequests"}'
 *       the harness's bounded runLoad through every target at once, until SIGUSR2 (or its
 *       bounds); then one JSON line `{"results":[…]}` (per target: ok, failed, failures).
 */
import { startBackend, runLoad } from './index.js';

const [mode, json] = process.argv.slice(2);
const o = JSON.parse(json ?? '{}') as Record<string, unknown>;

if (mode === 'upstream') {
  const backends = await Promise.all((o.ports as number[]).map((port) => startBackend(`${String(o.host)}:${port}`, { host: String(o.host), port })));
  process.once('SIGTERM', () => void Promise.all(backends.map((b) => b.close())).then(() => process.exit(0)));
} else if (mode === 'load') {
  const abort = new AbortController();
  process.once('SIGUSR2', () => abort.abort());
  const targets = o.targets as { url: string; host: string }[];
  const results = await Promise.all(
    targets.map((t) =>
      runLoad({
        url: t.url,
        host: t.host,
        concurrency: Number(o.concurrency ?? 2),
        durationMs: Number(o.durationMs ?? 60_000),
        maxRequests: Number(o.maxRequests ?? 100_000),
        signal: abort.signal,
      }),
    ),
  );
  process.stdout.write(`${JSON.stringify({ results: results.map((r) => ({ ok: r.ok, failed: r.failed, failures: r.failures })) })}\n`);
  process.exit(0);
} else {
  process.stderr.write(`hosts-agent: unknown mode ${String(mode)} (upstream | load)\n`);
  process.exit(2);
}
