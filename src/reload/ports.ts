/**
 * Pre-flight check for listeners a reload would add. `haproxy -c` binds nothing, so a new
 * TCP port already taken by another process (or not bindable at all) passes validation and
 * fails only at reload. In HAProxy 2.6 that failure is not harmless: the re-executed master
 * pauses the old worker's listeners before binding and resumes them only after giving up
 * (~3 s, measured), so every new connection meanwhile gets ECONNREFUSED. Probing the new
 * ports first turns that outage into a refused listener, which the reloader pins on the tcp
 * service that asked for it (quarantine) instead of refusing the whole render.
 */
import net from 'node:net';
import { ConfigInvalidError } from '../errors.js';
import { tcpListeners, type Listener } from '../render/index.js';

/** A listener the new config adds that cannot be bound here, and why. */
export interface UnavailableListener {
  readonly host: string;
  readonly port: number;
  /** The bind errno: EADDRINUSE, EACCES, EADDRNOTAVAIL, ... */
  readonly code: string;
  /** One line for logs and /readyz. */
  readonly reason: string;
}

const WHY: Record<string, string> = {
  EADDRINUSE: 'in use by another process',
  EACCES: 'permission denied (a port below 1024 needs root or CAP_NET_BIND_SERVICE)',
  EADDRNOTAVAIL: 'address not available on this host',
};

/**
 * The TCP listeners `next` binds and `current` does not that cannot be bound in this
 * network namespace with this process's privileges (the managed HAProxy has the same).
 * Probes run one at a time and release the port at once.
 */
export async function unavailableNewPorts(current: string, next: string): Promise<UnavailableListener[]> {
  const running = new Set(tcpListeners(current).map((l) => l.port));
  const added = tcpListeners(next).filter((l) => !running.has(l.port));
  const out: UnavailableListener[] = [];
  for (const l of added) {
    const code = await tryBind(l);
    if (code !== null) out.push({ host: l.host, port: l.port, code, reason: `cannot bind ${l.host}:${l.port}: ${code} (${WHY[code] ?? 'bind failed'})` });
  }
  return out;
}

/** Throws ConfigInvalidError naming each new listener that cannot be bound (see unavailableNewPorts). */
export async function assertNewPortsFree(current: string, next: string): Promise<void> {
  const unavailable = await unavailableNewPorts(current, next);
  if (unavailable.length) throw portsError(unavailable);
}

export function portsError(unavailable: readonly UnavailableListener[]): ConfigInvalidError {
  return new ConfigInvalidError(`new listener(s) cannot be bound, HAProxy would fail at reload: ${unavailable.map((u) => u.reason).join('; ')}`, {
    busy: unavailable.map((u) => `${u.host}:${u.port}`),
    unavailable,
  });
}

function tryBind(l: Listener): Promise<string | null> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
    srv.listen({ host: l.host, port: l.port, exclusive: true }, () => srv.close(() => resolve(null)));
  });
}
