/**
 * The rendered HTTPS layout against a real HAProxy: one public TCP frontend reading SNI;
 * passthrough SNI reaches a TLS upstream untouched; everything else crosses the unix-socket
 * hop (PROXY v2) to the terminating frontend, which routes like the HTTP one and sets
 * X-Forwarded-Proto/Port/For; url_reg wins over the Host map; unknown hosts get the 503.
 * Still true after a reload (the unix-socket listener is passed on like the TCP ones).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import https from 'node:https';
import { mkdir, readFile, writeFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { DEFAULT_OPTIONS, type HttpService, type Registry } from '../../src/model.js';
import { MasterClient, RuntimeClient } from '../../src/runtime/index.js';
import { defaultSettings, renderConfig, type RenderSettings } from '../../src/render/index.js';
import { NoGuard, Reloader, writeRendered } from '../../src/reload/index.js';
import { certPaths, prepareCertFiles } from '../../src/certs/default.js';
import { renderCrtList } from '../../src/certs/crtlist.js';
import { haproxyBin, execFileP, freePort, removeDir, socketCommand, startHaproxy, tempDir, waitFor } from '../../testkit/index.js';

function svc(name: string, o: Partial<HttpService> = {}): HttpService {
  return { kind: 'http', name, upstreams: new Map(), domains: [], urlReg: null, sslPassthrough: false, options: DEFAULT_OPTIONS, ...o };
}
const registry = (svcs: HttpService[]): Registry => ({ revision: '1', http: new Map(svcs.map((s) => [s.name, s])), tcp: new Map() });

/** HTTP upstream echoing its id and the forwarding headers it received. */
async function echoBackend(id: string): Promise<{ port: number; close(): Promise<void> }> {
  const server = http.createServer((req, res) => {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ id, proto: req.headers['x-forwarded-proto'], port: req.headers['x-forwarded-port'], xff: req.headers['x-forwarded-for'] }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const addr = server.address();
  return { port: typeof addr === 'object' && addr ? addr.port : 0, close: () => new Promise((r) => (server.closeAllConnections(), server.close(() => r()))) };
}

function get(o: { port: number; host: string; path?: string; tls: boolean }): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const opts = { host: '127.0.0.1', port: o.port, path: o.path ?? '/', headers: { host: o.host }, agent: false as const, timeout: 5000 };
    const cb = (res: http.IncomingMessage) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    };
    const req = o.tls ? https.request({ ...opts, servername: o.host, rejectUnauthorized: false }, cb) : http.request(opts, cb);
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

test('https: SNI passthrough, termination via the PROXY-v2 hop, routing identical to http; survives a reload', async (t) => {
  const dir = await tempDir('hu-https-it-');
  t.after(() => removeDir(dir));
  const certs = path.join(dir, 'certs');
  await mkdir(certs);
  await execFileP('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'crt.pem'), '-days', '2', '-subj', '/CN=web.test']);
  const key = await readFile(path.join(dir, 'key.pem'), 'utf8');
  const cert = await readFile(path.join(dir, 'crt.pem'), 'utf8');
  await writeFile(path.join(certs, 'web.test.pem'), cert + key);
  await rm(path.join(dir, 'key.pem'));

  // TLS upstream for the passthrough service: terminates TLS itself.
  const tlsUpstream = https.createServer({ key, cert }, (_req, res) => res.end('tls-upstream'));
  await new Promise<void>((r) => tlsUpstream.listen(0, '127.0.0.1', () => r()));
  t.after(() => new Promise<void>((r) => (tlsUpstream.closeAllConnections(), tlsUpstream.close(() => r()))));
  const tlsPort = (tlsUpstream.address() as { port: number }).port;
  const web = await echoBackend('web');
  const api = await echoBackend('api');
  t.after(() => web.close());
  t.after(() => api.close());

  const httpPort = await freePort();
  const httpsPort = await freePort();
  const settings: RenderSettings = { ...defaultSettings(dir), bindAddress: '127.0.0.1', httpPort, httpsPort, certsDir: certs, hasCerts: true };
  const services = [svc('web', { domains: ['web.test'] }), svc('api', { domains: ['api.test'], urlReg: '^/api/' }), svc('vault', { domains: ['vault.test'], sslPassthrough: true })];
  // The crt-list `run --certs` keeps: its default certificate first, then the served PEM.
  const paths = certPaths(dir, settings.crtList);
  await prepareCertFiles(paths);
  await writeFile(settings.crtList, renderCrtList([{ cert: path.join(certs, 'web.test.pem') }], paths.defaultCert));
  const rendered = renderConfig({ registry: registry(services), capacity: new Map(), settings });
  const cfgPath = path.join(dir, 'haproxy.cfg');
  await writeRendered(rendered, cfgPath, { haproxyBin: haproxyBin() });
  const hp = await startHaproxy(rendered.config, { dir });
  t.after(() => hp.stop());
  await waitFor(() => socketCommand(settings.adminSocket, 'show info').then((r) => r.includes('Pid:')), { what: 'admin socket' });
  for (const [be, port] of [['http-web', web.port], ['http-api', api.port], ['tls-vault', tlsPort]] as const) {
    await socketCommand(settings.adminSocket, `set server ${be}/s1 addr 127.0.0.1 port ${port}`);
    await socketCommand(settings.adminSocket, `set server ${be}/s1 state ready`);
  }

  const check = async (when: string) => {
    const plain = JSON.parse((await get({ port: httpPort, host: 'web.test', tls: false })).body);
    assert.deepEqual([plain.id, plain.proto, plain.port, plain.xff], ['web', 'http', String(httpPort), '127.0.0.1'], `${when}: http`);
    const term = JSON.parse((await get({ port: httpsPort, host: 'web.test', tls: true })).body);
    // PROXY v2 carried the client address and the public port across the hop.
    assert.deepEqual([term.id, term.proto, term.port, term.xff], ['web', 'https', String(httpsPort), '127.0.0.1'], `${when}: https terminated`);
    // url_reg beats the Host map, on both frontends.
    assert.equal(JSON.parse((await get({ port: httpPort, host: 'web.test', path: '/api/x', tls: false })).body).id, 'api', `${when}: url_reg http`);
    assert.equal(JSON.parse((await get({ port: httpsPort, host: 'web.test', path: '/api/x', tls: true })).body).id, 'api', `${when}: url_reg https`);
    // Host with port and upper case still matches; an unknown host gets the 503.
    assert.equal(JSON.parse((await get({ port: httpPort, host: `WEB.test:${httpPort}`, tls: false })).body).id, 'web', `${when}: host normalised`);
    const none = await get({ port: httpPort, host: 'nope.test', tls: false });
    assert.deepEqual([none.status, none.body], [503, 'no route'], `${when}: no route`);
    // Passthrough: HAProxy never decrypts; the upstream's own TLS answers.
    assert.equal((await get({ port: httpsPort, host: 'vault.test', tls: true })).body, 'tls-upstream', `${when}: passthrough`);
  };
  await check('before reload');

  const reloader = new Reloader({
    haproxyBin: haproxyBin(),
    master: new MasterClient({ path: hp.masterSocket }),
    runtime: new RuntimeClient({ path: settings.adminSocket }),
    guard: new NoGuard(),
    cfgPath,
    serverStateFile: settings.serverStateFile,
    guardPorts: () => [httpPort, httpsPort],
  });
  services.push(svc('other', { domains: ['other.test'] }));
  await reloader.reload(renderConfig({ registry: registry(services), capacity: new Map(), settings }), ['service-added:http-other']);
  await check('after reload');
});
