/**
 * prepareCertFiles: the default certificate and the crt-list `run --certs` writes before
 * HAProxy loads a config naming them (HAProxy refuses an empty crt-list).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { certPaths, prepareCertFiles } from '../../src/certs/default.js';
import { validatePem } from '../../src/certs/pem.js';

test('prepareCertFiles: generates a valid default, writes it first, keeps earlier entries whose copy exists', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'hu-certs-default-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const p = certPaths(dir, path.join(dir, 'certs.crtlist'));
  assert.equal(p.storeDir, path.join(dir, 'certs'));

  await prepareCertFiles(p);
  const pem = await readFile(p.defaultCert, 'utf8');
  assert.equal(validatePem(pem).ok, true, 'certificate + matching key, not expired');
  assert.equal(new X509Certificate(pem).subject, 'CN=default.invalid');
  assert.equal(await readFile(p.crtList, 'utf8'), `${p.defaultCert}\n`);

  // A second start keeps the default (same serial) and the entries of the earlier run that still exist.
  const kept = path.join(dir, 'kept.pem');
  await writeFile(kept, 'x');
  await writeFile(p.crtList, `${kept}\n${path.join(dir, 'gone.pem')}\n`);
  await prepareCertFiles(p);
  assert.equal(await readFile(p.defaultCert, 'utf8'), pem, 'not regenerated');
  assert.equal(await readFile(p.crtList, 'utf8'), `${p.defaultCert}\n${kept}\n`);

  // An unusable default file is replaced.
  await writeFile(p.defaultCert, 'garbage');
  await prepareCertFiles(p);
  assert.equal(validatePem(await readFile(p.defaultCert, 'utf8')).ok, true);
});

test('prepareCertFiles: without openssl the error names --certs and the default certificate path', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'hu-certs-default-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const p = certPaths(dir, path.join(dir, 'certs.crtlist'));
  await assert.rejects(prepareCertFiles({ ...p, openssl: path.join(dir, 'no-such-openssl') }), (err: Error & { code?: string; context?: Record<string, unknown> }) => {
    assert.equal(err.code, 'E_CONFIG');
    assert.match(err.message, /--certs: cannot generate the default certificate/);
    assert.ok(err.message.includes(p.defaultCert));
    return true;
  });
});
