/**
 * Registry trust (issue 12 item 6): the `--upstream-cidrs` matcher, and who keeps a domain or
 * tcp port two services claim (the key etcd created first, not the name that sorts first).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AddressPolicy, parseCidr, parseCidrList, parseRegistry, type RegistryKv } from '../../src/watch/index.js';
import type { TcpService } from '../../src/model.js';

const P = '/haproxy-discover';
const H = `${P}/http-services`;
const T = `${P}/tcp-services`;

function policy(cidrs?: string, listen: { host: string; port: number } | null = null): AddressPolicy {
  if (cidrs === undefined) return new AddressPolicy({ listen });
  const allow = parseCidrList(cidrs.split(','));
  assert.ok(typeof allow !== 'string', String(allow));
  return new AddressPolicy({ allow, listen });
}

test('parseCidr: canonical text, single addresses, host bits and bad prefixes refused', () => {
  const ok = (t: string) => {
    const c = parseCidr(t);
    assert.ok(typeof c !== 'string', `${t}: ${String(c)}`);
    return c.text;
  };
  assert.equal(ok('10.0.0.0/8'), '10.0.0.0/8');
  assert.equal(ok('192.0.2.7'), '192.0.2.7/32');
  assert.equal(ok('FD00:0::/8'), 'fd00::/8');
  assert.equal(ok('::ffff:10.0.0.0/104'), '::ffff:a00:0/104');
  assert.match(String(parseCidr('10.0.0.1/8')), /host bits set \(did you mean 10\.0\.0\.0\/8\?\)/);
  assert.match(String(parseCidr('10.0.0.0/33')), /prefix length must be 0-32/);
  assert.match(String(parseCidr('fd00::/129')), /prefix length must be 0-128/);
  assert.match(String(parseCidr('example.com/8')), /not an IPv4 or IPv6 address/);
  assert.match(String(parseCidr('10.0.0.0/8/8')), /not a CIDR/);
  assert.match(String(parseCidrList(['loopback', 'nonsense'])), /nonsense.*use CIDRs or loopback, private, any/);
  assert.match(String(parseCidrList([])), /no CIDR given/);
});

test('default policy: loopback and private allowed; public, link-local, multicast, unspecified and --listen refused', () => {
  const p = policy(undefined, { host: '127.0.0.1', port: 9180 });
  for (const addr of ['127.0.0.1', '127.9.9.9', '10.1.2.3', '172.16.0.1', '172.31.255.254', '192.168.1.1', '100.64.0.1', '::1', 'fd12::1']) {
    assert.equal(p.check(addr, 8080), null, addr);
  }
  const refused: Array<[string, number, RegExp]> = [
    ['169.254.169.254', 80, /link-local \(169\.254\.0\.0\/16, e\.g\. a cloud metadata service\)/],
    ['fe80::1', 80, /link-local \(fe80::\/10/],
    ['::ffff:a9fe:a9fe', 80, /::ffff:a9fe:a9fe \(IPv4 169\.254\.169\.254\) is link-local/],
    ['224.0.0.1', 80, /multicast/],
    ['ff02::1', 80, /multicast/],
    ['0.0.0.0', 80, /unspecified/],
    ['::', 80, /unspecified/],
    ['127.0.0.1', 9180, /updater's own --listen address/],
    ['203.0.113.5', 443, /203\.0\.113\.5 is outside --upstream-cidrs \(default loopback,private\); add its range to --upstream-cidrs \(HAPROXY_UPDATER_UPSTREAM_CIDRS\)/],
    ['172.32.0.1', 80, /outside --upstream-cidrs/],
    ['2001:db8::1', 80, /outside --upstream-cidrs/],
  ];
  for (const [addr, port, why] of refused) assert.match(p.check(addr, port) ?? 'allowed', why, `${addr}:${port}`);
  // Same address, another port: only the listener itself is refused.
  assert.equal(p.check('127.0.0.1', 9181), null);
});

test('explicit --upstream-cidrs: the list decides; `any` does not open link-local, a link-local range does', () => {
  const pub = policy('203.0.113.0/24');
  assert.equal(pub.check('203.0.113.5', 80), null);
  assert.match(pub.check('10.0.0.1', 80) ?? '', /outside --upstream-cidrs \(203\.0\.113\.0\/24\)/);
  const any = policy('any');
  assert.equal(any.check('8.8.8.8', 53), null);
  assert.equal(any.check('2001:db8::1', 80), null);
  assert.match(any.check('169.254.169.254', 80) ?? '', /link-local/);
  const ll = policy('169.254.10.0/24');
  assert.equal(ll.check('169.254.10.20', 80), null);
  assert.match(ll.check('169.254.169.254', 80) ?? '', /link-local/);
  // A wildcard --listen refuses every loopback address on its port.
  const wild = policy('loopback', { host: '0.0.0.0', port: 9180 });
  assert.match(wild.check('127.0.0.2', 9180) ?? '', /--listen/);
  assert.match(wild.check('::1', 9180) ?? '', /--listen/);
  assert.equal(wild.check('127.0.0.2', 9181), null);
});

test('parseRegistry with a policy: refused upstreams are rejections naming the key; the rest applies', () => {
  const kvs: RegistryKv[] = [
    { key: `${H}/web/upstreams/a`, value: '10.0.0.1:80' },
    { key: `${H}/web/upstreams/meta`, value: '169.254.169.254:80' },
    { key: `${H}/web/upstreams/pub`, value: '{"addr":"198.51.100.1:80","weight":5}' },
  ];
  const { registry, rejections } = parseRegistry(kvs, P, '1', { addressPolicy: policy() });
  assert.deepEqual([...registry.http.get('web')!.upstreams.keys()], ['a']);
  assert.deepEqual(rejections.map((r) => r.key), [`${H}/web/upstreams/meta`, `${H}/web/upstreams/pub`]);
  assert.match(rejections[0]!.reason, /169\.254\.169\.254 is link-local/);
  // Without a policy (unit callers, the pure parser) the address rule does not apply.
  assert.equal(parseRegistry(kvs, P, '1').registry.http.get('web')!.upstreams.size, 3);
});

test('claims: the key created first keeps a domain or tcp port, whatever the names; the loser keeps its other values', () => {
  const kvs: RegistryKv[] = [
    // "aaa" sorts first but registered its domain later (revision 20) than "zzz" (revision 10).
    { key: `${H}/aaa/domain`, value: 'shop.example,aaa.example', createRevision: '20' },
    { key: `${H}/zzz/domain`, value: 'shop.example', createRevision: '10' },
    // Passthrough services route by SNI, a separate map: no conflict with a plain Host claim.
    { key: `${H}/tls/domain`, value: 'shop.example', createRevision: '30' },
    { key: `${H}/tls/sslpass`, value: '1', createRevision: '30' },
    { key: `${T}/db-new/ports`, value: '5432,5433', createRevision: '40' },
    { key: `${T}/db-old/ports`, value: '5432', createRevision: '7' },
  ];
  const run = (input: RegistryKv[]) => parseRegistry(input, P, '50');
  const { registry, rejections } = run(kvs);
  assert.deepEqual(registry.http.get('zzz')!.domains, ['shop.example']);
  assert.deepEqual(registry.http.get('aaa')!.domains, ['aaa.example']);
  assert.deepEqual(registry.http.get('tls')!.domains, ['shop.example']);
  assert.deepEqual((registry.tcp.get('db-old') as TcpService).ports, [5432]);
  assert.deepEqual((registry.tcp.get('db-new') as TcpService).ports, [5433]);
  assert.deepEqual(
    rejections.map((r) => [r.key, r.claimedBy]),
    [
      [`${H}/aaa/domain`, `${H}/zzz/domain`],
      [`${T}/db-new/ports`, `${T}/db-old/ports`],
    ],
  );
  assert.match(rejections[0]!.reason, /^domain shop\.example is already claimed by \/haproxy-discover\/http-services\/zzz\/domain \(created at revision 10, before this key, created at revision 20\)/);
  assert.match(rejections[1]!.reason, /^tcp port 5432 is already claimed by/);
  // Input order does not matter; the decision is the same after a restart (same revisions).
  assert.deepEqual(JSON.stringify(run([...kvs].reverse())), JSON.stringify(run(kvs)));
  // The winner deleting its claim hands the domain to the next claimant.
  const { registry: after } = run(kvs.filter((k) => !k.key.includes('/zzz/')));
  assert.deepEqual(after.http.get('aaa')!.domains, ['aaa.example', 'shop.example']);
});
