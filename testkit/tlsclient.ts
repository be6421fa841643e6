/**
 * TLS client side of the certificate tests: single handshakes with SNI, and a bounded
 * stream of new handshakes that records which serial each name was presented with.
 */
import tls from 'node:tls';

export interface Seen {
  serial?: string;
  cn?: string;
  error?: string;
}

/** One TLS handshake with `sni`; the presented leaf's serial and CN, or the error code. */
export function handshake(port: number, sni: string, timeoutMs = 5000): Promise<Seen> {
  return new Promise((resolve) => {
    const s = tls.connect({ host: '127.0.0.1', port, servername: sni, rejectUnauthorized: false });
    const timer = setTimeout(() => s.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })), timeoutMs);
    s.once('secureConnect', () => {
      clearTimeout(timer);
      const c = s.getPeerCertificate();
      s.destroy();
      resolve({ serial: c.serialNumber?.toUpperCase(), cn: typeof c.subject?.CN === 'string' ? c.subject.CN : undefined });
    });
    s.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve({ error: err.code ?? err.message });
    });
  });
}

export interface TlsLoad {
  /** Stops the loops and returns the counts. */
  stop(): Promise<TlsLoadResult>;
}

export interface TlsLoadResult {
  ok: number;
  failed: number;
  failures: Record<string, number>;
  serials: Map<string, string[]>;
  /** Every successful handshake per name: when it started (performance.now()) and the serial presented. */
  samples: Map<string, Array<{ startedAt: number; serial: string }>>;
}

/** The distinct serials presented for `name` to handshakes started in [from, to). */
export function serialsBetween(r: TlsLoadResult, name: string, from: number, to = Infinity): string[] {
  return [...new Set((r.samples.get(name) ?? []).filter((s) => s.startedAt >= from && s.startedAt < to).map((s) => s.serial))];
}

/**
 * New handshakes, `concurrency` loops round-robin over `names`, bounded by count and time.
 * `serials` per name: the certificates seen, in the order the handshakes started (not
 * finished: with several loops, one started before a switch can finish after one started
 * after it), with repeats collapsed.
 */
export function tlsLoad(port: number, names: string[], o: { concurrency?: number; maxMs?: number; max?: number } = {}): TlsLoad {
  const deadline = Date.now() + (o.maxMs ?? 30_000);
  const max = o.max ?? 50_000;
  const out: TlsLoadResult = { ok: 0, failed: 0, failures: {}, serials: new Map(), samples: new Map() };
  const seen = new Map<string, Array<[started: number, serial: string]>>();
  let stopped = false;
  let n = 0;
  const loop = async () => {
    while (!stopped && Date.now() < deadline && n < max) {
      const started = n++;
      const name = names[started % names.length]!;
      const startedAt = performance.now();
      const r = await handshake(port, name);
      if (r.error) {
        out.failed++;
        out.failures[r.error] = (out.failures[r.error] ?? 0) + 1;
      } else {
        out.ok++;
        const samples = seen.get(name) ?? [];
        samples.push([started, r.serial ?? '?']);
        seen.set(name, samples);
        const timed = out.samples.get(name) ?? [];
        timed.push({ startedAt, serial: r.serial ?? '?' });
        out.samples.set(name, timed);
      }
    }
  };
  const loops = Promise.all(Array.from({ length: o.concurrency ?? 4 }, loop));
  return {
    async stop() {
      stopped = true;
      await loops;
      for (const [name, samples] of seen) {
        const seq: string[] = [];
        for (const [, serial] of samples.sort((a, b) => a[0] - b[0])) if (seq.at(-1) !== serial) seq.push(serial);
        out.serials.set(name, seq);
      }
      return out;
    },
  };
}
