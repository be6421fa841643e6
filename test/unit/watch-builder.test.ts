/**
 * The watcher's incremental registry (src/watch/builder.ts) equals a full parse of the same
 * keys after every random batch of puts and deletes, re-parses only what changed, and
 * reports which services changed; a rejected entry changes nothing else.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseRegistry } from '../../src/watch/parse.js';
import { RegistryBuilder } from '../../src/watch/builder.js';
import { prng } from './reconcile-helpers.js';

const P = '/reg';

function randomKey(rnd: () => number): [string, string] {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  const group = pick(['http-services', 'http-services', 'tcp-services', 'other']);
  const svc = pick(['a', 'b', 'c', 'd', 'bad name', '']);
  const field = pick(['domain', 'upstreams/u1', 'upstreams/u2', 'upstreams/u3', 'sslpass', 'options', 'ports', 'junk']);
  const value =
    field === 'domain'
      ? pick(['a.example', 'b.example', 'x.example y.example', 'bad_host'])
      : field.startsWith('upstreams')
        ? pick(['10.0.0.1:80', '10.0.0.2:80', '10.0.0.1:80', '300.1.1.1:80', '{"addr":"10.0.0.3:81","weight":5}'])
        : field === 'options'
          ? pick(['{"balance":"source"}', '{"minSlots":2}', '{nope'])
          : field === 'ports'
            ? pick(['9000', '9001,9002', 'x'])
            : pick(['1', '0', 'yes']);
  return [`${P}/${group}/${svc}/${field}`, value];
}

const serviceKeys = (r: ReturnType<typeof parseRegistry>['registry']) => ({ http: [...r.http.keys()], tcp: [...r.tcp.keys()] });

test('incremental builds equal a full parse after every batch, in the same service order', () => {
  for (let seed = 1; seed <= 30; seed++) {
    const rnd = prng(seed);
    const kv = new Map<string, string>();
    // etcd's create_revision: set when a key is created, kept by later puts (claims follow it).
    const created = new Map<string, string>();
    let prev = parseRegistry([], P, '1').registry;
    const b = new RegistryBuilder(P);
    b.reset(kv);
    b.build('1');
    for (let step = 0; step < 60; step++) {
      const touched = new Set<string>();
      for (let i = Math.floor(rnd() * 4); i >= 0; i--) {
        const [k, v] = randomKey(rnd);
        if (rnd() < 0.3 && kv.size > 0) {
          const del = [...kv.keys()][Math.floor(rnd() * kv.size)]!;
          kv.delete(del);
          created.delete(del);
          b.delete(del);
          touched.add(del);
        } else {
          kv.set(k, v);
          if (!created.has(k)) created.set(k, String(1000 - step * 10 - i));
          b.set(k, v, created.get(k));
          touched.add(k);
        }
      }
      const rev = String(step + 2);
      const got = b.build(rev);
      const want = parseRegistry([...kv].map(([key, value]) => ({ key, value, createRevision: created.get(key) })), P, rev);
      const where = `seed ${seed} step ${step}`;
      assert.deepEqual(got.registry, want.registry, where);
      assert.deepEqual(serviceKeys(got.registry), serviceKeys(want.registry), `${where}: order`);
      assert.deepEqual(got.rejections, want.rejections, `${where}: rejections`);
      assert.deepEqual(new Set(got.ignored), new Set(want.ignored), `${where}: ignored`);
      // Every service whose keys were touched is reported, nothing else.
      const expected = new Set<string>();
      for (const k of touched) {
        const m = /^\/reg\/(http|tcp)-services\/([^/]+)\/./.exec(k);
        if (m) expected.add(`${m[1]}/${m[2]}`);
      }
      // ...and every service whose claims settled differently because another one changed.
      for (const [n, svc] of want.registry.http) if (JSON.stringify(svc.domains) !== JSON.stringify(prev.http.get(n)?.domains ?? null)) expected.add(`http/${n}`);
      for (const [n, svc] of want.registry.tcp) if (JSON.stringify(svc.ports) !== JSON.stringify(prev.tcp.get(n)?.ports ?? null)) expected.add(`tcp/${n}`);
      prev = want.registry;
      assert.deepEqual(got.changed, expected, `${where}: changed`);
    }
  }
});

test('only changed services are re-parsed: the others keep their very objects', () => {
  const b = new RegistryBuilder(P);
  b.reset(
    new Map([
      [`${P}/http-services/a/upstreams/u1`, '10.0.0.1:80'],
      [`${P}/http-services/b/upstreams/u1`, '10.0.0.2:80'],
    ]),
  );
  const first = b.build('1');
  assert.equal(first.changed, null, 'a load reports everything');
  b.set(`${P}/http-services/b/upstreams/u2`, 'not-an-address');
  const second = b.build('2');
  assert.equal(second.registry.http.get('a'), first.registry.http.get('a'), 'service a not re-parsed');
  // The rejected entry is reported and changes nothing else: b is what it was.
  assert.deepEqual(second.registry.http.get('b'), first.registry.http.get('b'));
  assert.deepEqual(second.rejections.map((r) => r.key), [`${P}/http-services/b/upstreams/u2`]);
  assert.deepEqual(second.changed, new Set(['http/b']));
});
