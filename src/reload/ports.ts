/**
 * Pre-flight check for listeners a reload would add. `haproxy -c` binds nothing, so a new
 * TCP port already taken by another process passes validation and fails only at reload.
 * In HAProxy 2.6 that failure is not harmless: the re-executed master pauses the old
 * worker's listeners before binding and resumes them only after giving up (~3 s, measured),
 * so every new connection meanwhile gets ECONNREFUSED. Probing the new ports first turns
 * that outage into a refused render.
 */
import net from 'node:net';
import { ConfigInvalidError } from '../errors.js';
import { tcpListeners, type Listener } from '../render/index.js';

/**
 * Throws ConfigInvalidError when a TCP port that `next` binds and `current` does not is in
 * use (EADDRINUSE) in this network namespace. Other bind errors (EACCES for a port < 1024
 * when the updater is not root, EADDRNOTAVAIL) are left to HAProxy, which may be allowed.
 */
export async function assertNewPortsFree(current: string, next: string): Promise<void> {
  const running = new Set(tcpListeners(current).map((l) => l.port));
  const added = tcpListeners(next).filter((l) => !running.has(l.port));
  const busy: string[] = [];
  for (const l of added) {
    if ((await tryBind(l)) === 'EADDRINUSE') busy.push(`${l.host}:${l.port}`);
  }
  if (busy.length) {
    throw new ConfigInvalidError(`new listener(s) ${busy.join(', ')} already in use by another process; HAProxy would fail to bind at reload`, {
      busy,
    });
  }
}

function tryBind(l: Listener): Promise<string | null> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
    srv.listen({ host: l.host, port: l.port, exclusive: true }, () => srv.close(() => resolve(null)));
  });
}
