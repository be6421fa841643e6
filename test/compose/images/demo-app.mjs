// Demo upstream for the compose test, standing in for traefik/whoami with the same
// variables: answers every request with `<WHOAMI_NAME>\n` on WHOAMI_PORT_NUMBER.
// DEMO_BIND (default 127.0.0.1) keeps it on loopback when it runs with host networking.
// (The project's test backends live in test/integration/harness.ts, which needs the
// project's TypeScript toolchain; this image has only Node.)
import http from 'node:http';

const name = process.env.WHOAMI_NAME || 'whoami';
const port = Number(process.env.WHOAMI_PORT_NUMBER || 80);
const bind = process.env.DEMO_BIND || '127.0.0.1';
const server = http.createServer((req, res) => {
  req.resume();
  res.writeHead(200, { 'content-type': 'text/plain' }).end(`${name}\n`);
});
server.keepAliveTimeout = 1000;
server.listen(port, bind);
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => server.close(() => process.exit(0)));
