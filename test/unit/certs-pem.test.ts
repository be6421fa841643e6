/**
 * PEM validation on real certificates made by openssl: what is accepted, what is refused
 * and why, and what the payload looks like (no blank lines, blocks only, leaf first).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { validatePem, mayBeIncomplete, type PemResult } from '../../src/certs/pem.js';
import { parseCrtListFile, renderCrtList } from '../../src/certs/crtlist.js';
import { encryptKey, makeCa, makeExpiredLeaf, makeKey, makeLeaf } from '../fixtures/certs.js';

const dir = await mkdtemp(path.join(os.tmpdir(), 'hu-pem-'));
after(() => rm(dir, { recursive: true, force: true }));

const root = await makeCa(dir, 'Test Root');
const inter = await makeCa(dir, 'Test Intermediate', root);
const leaf = await makeLeaf(dir, ['www.example.test', 'example.test'], { ca: inter });
const self = await makeLeaf(dir, ['self.example.test']);
const otherKey = await makeKey(dir);

function problem(r: PemResult): string {
  return r.ok ? 'ok' : r.problem;
}

test('a leaf with its chain and key is accepted: names, serial, fingerprint, dates, payload lines', () => {
  const r = validatePem(leaf.cert + inter.cert + leaf.key);
  assert.ok(r.ok, JSON.stringify(r));
  const x = new X509Certificate(leaf.cert);
  assert.deepEqual(r.names, ['www.example.test', 'example.test']);
  assert.equal(r.serial, x.serialNumber.toUpperCase());
  assert.equal(r.sha1, x.fingerprint.replaceAll(':', ''));
  assert.equal(r.chainLength, 2);
  assert.equal(r.notAfter.getTime(), new Date(x.validTo).getTime());
  assert.ok(r.lines.every((l) => l.length > 0 && l.trim() === l), 'no blank line, no surrounding whitespace');
  assert.equal(r.lines[0], '-----BEGIN CERTIFICATE-----');
  assert.equal(r.lines.filter((l) => l === '-----BEGIN CERTIFICATE-----').length, 2);
  assert.match(r.lines.at(-1) ?? '', /^-----END (EC )?PRIVATE KEY-----$/);
});

test('the key may come first, with CRLF, blank lines and "Bag Attributes" text around the blocks; same hash as the clean file', () => {
  const clean = validatePem(self.cert + self.key);
  const messy = validatePem(
    'Bag Attributes\n    localKeyID: 01 00 00 00\nsubject=/CN=self.example.test\n' + (self.key + '\n\n' + self.cert).replaceAll('\n', '\r\n') + '\n\n',
  );
  assert.ok(clean.ok && messy.ok);
  assert.equal(messy.hash, clean.hash, 'normalised: key moved after the certificate, noise dropped');
  assert.deepEqual(messy.lines, clean.lines);
  assert.deepEqual(clean.names, ['self.example.test']);
});

test('refusals carry a problem code and a reason', () => {
  const truncatedCert = leaf.cert.slice(0, Math.floor(leaf.cert.length / 2));
  const cases: Array<[string, string, string, RegExp]> = [
    ['key mismatch', leaf.cert + inter.cert + otherKey, 'key-mismatch', /does not match/],
    ['no key', leaf.cert + inter.cert, 'no-private-key', /no PRIVATE KEY/],
    ['no certificate', leaf.key, 'no-certificate', /no CERTIFICATE/],
    ['empty', '\n\n', 'empty', /empty/],
    ['truncated in the key', leaf.cert + leaf.key.slice(0, 60), 'truncated', /no END line/],
    ['truncated in the certificate', truncatedCert, 'truncated', /no END line/],
    ['cut inside a base64 line then key', truncatedCert + '\n-----END CERTIFICATE-----\n' + leaf.key, 'bad-certificate', /cannot be parsed/],
    ['two keys', self.cert + self.key + otherKey, 'several-private-keys', /2 private keys/],
    ['chain in the wrong order', leaf.cert + root.cert + inter.cert + leaf.key, 'chain-order', /did not issue/],
    ['unsupported block', self.cert + self.key + '-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n', 'unsupported-block', /X509 CRL/],
    ['garbage in a block', self.cert.replace(/\n[A-Za-z0-9+/]{10}/, '\nshow info;'), 'bad-certificate', /not base64/],
  ];
  for (const [what, text, code, reason] of cases) {
    const r = validatePem(text);
    assert.equal(problem(r), code, what);
    assert.ok(!r.ok && reason.test(r.reason), `${what}: ${r.ok ? '' : r.reason}`);
  }
});

test('an encrypted key is refused (HAProxy cannot ask for a passphrase at runtime)', async () => {
  const r = validatePem(self.cert + (await encryptKey(dir, self.key)));
  assert.equal(problem(r), 'encrypted-key');
});

test('expiry and not-yet-valid are judged against the given clock', () => {
  const notAfter = new Date(new X509Certificate(self.cert).validTo);
  const notBefore = new Date(new X509Certificate(self.cert).validFrom);
  assert.ok(validatePem(self.cert + self.key, new Date(notAfter.getTime() - 1000)).ok);
  const expired = validatePem(self.cert + self.key, new Date(notAfter.getTime() + 1000));
  assert.equal(problem(expired), 'expired');
  assert.ok(!expired.ok && expired.reason.includes(notAfter.toISOString()));
  assert.equal(problem(validatePem(self.cert + self.key, new Date(notBefore.getTime() - 60_000))), 'not-yet-valid');
});

test('a certificate that expired in 2020 is refused today', async () => {
  const old = await makeExpiredLeaf(dir, 'old.example.test', root);
  const r = validatePem(old.cert + old.key);
  assert.equal(problem(r), 'expired');
  assert.ok(!r.ok && r.reason.includes('2020-01-02'));
});

test('only what a half-written file can look like is worth a retry', () => {
  assert.ok(mayBeIncomplete('truncated') && mayBeIncomplete('no-private-key') && mayBeIncomplete('empty'));
  assert.ok(!mayBeIncomplete('key-mismatch') && !mayBeIncomplete('expired') && !mayBeIncomplete('encrypted-key'));
});

test('crt-list text: default first, others sorted, SNI filters; parsed back; unsafe paths refused', () => {
  const text = renderCrtList([{ cert: '/s/b.pem' }, { cert: '/s/a.pem', sni: ['a.test', '*.a.test'] }, { cert: '/s/default.pem' }], '/s/default.pem');
  assert.equal(text, '/s/default.pem\n/s/a.pem a.test *.a.test\n/s/b.pem\n');
  assert.deepEqual(parseCrtListFile(text + '# comment\n\n'), [{ cert: '/s/default.pem' }, { cert: '/s/a.pem', sni: ['a.test', '*.a.test'] }, { cert: '/s/b.pem' }]);
  assert.equal(renderCrtList([]), '');
  assert.throws(() => renderCrtList([{ cert: '/s/a.pem\n/s/x.pem' }]), /entries\[0\]\.cert/);
  assert.throws(() => renderCrtList([{ cert: 'relative.pem' }]), /entries\[0\]\.cert/);
  assert.throws(() => renderCrtList([{ cert: '/s/a.pem', sni: ['a.test [verify none]'] }]), /sni/);
  assert.throws(() => parseCrtListFile('/s/a.pem [verify none] a.test\n'), /ssl options/);
});
