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
  stop(): Promise<{ ok: number; failed: number; failures: Record<string, number>; serials: Map<string, string[]> }>;
}

/** New handshakes, `concurrency` loops round-robin over `names`, bounded by count and time. */
export function tlsLoad(port: number, names: string[], o: { concurrency?: number; maxMs?: number; max?: number } = {}): TlsLoad {
  const deadline = Date.now() + (o.maxMs ?? 30_000);
  const max = o.max ?? 50_000;
  const out = { ok: 0, failed: 0, failures: {} as Record<string, number>, serials: new Map<string, string[]>() };
  let stopped = false;
  let n = 0;
  const loop = async () => {
    while (!stopped && Date.now() < deadline && n < max) {
      const name = names[n++ % names.length]!;
      const r = await handshake(port, name);
      if (r.error) {
        out.failed++;
        out.failures[r.error] = (out.failures[r.error] ?? 0) + 1;
      } else {
        out.ok++;
        const seq = out.serials.get(name) ?? [];
        if (seq.at(-1) !== r.serial) seq.push(r.serial ?? '?');
        out.serials.set(name, seq);
      }
    }
  };
  const loops = Promise.all(Array.from({ length: o.concurrency ?? 4 }, loop));
  return {
    async stop() {
      stopped = true;
      await loops;
      return out;
    },
  };
}
