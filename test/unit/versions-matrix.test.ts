import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { LEGS, SCENARIOS, filePath, scenarioFiles, supportedVersionsMarkdown } from '../../scripts/matrix.js';
import { KNOWN_BRANCHES } from '../../src/runtime/capabilities.js';

test("README's Supported versions table is the one generated from the matrix definition", async () => {
  const readme = await readFile(new URL('../../README.md', import.meta.url), 'utf8');
  const m = /<!-- VERSIONS:BEGIN -->\n([\s\S]*?)\n<!-- VERSIONS:END -->/.exec(readme);
  assert.ok(m, 'README.md has the VERSIONS markers');
  assert.equal(m[1], supportedVersionsMarkdown(), 'regenerate from scripts/matrix.ts supportedVersionsMarkdown()');
});

test('every scenario names test files that exist; every leg runs a branch the capability table knows', () => {
  for (const s of SCENARIOS) {
    assert.ok(s.files.length > 0, s.name);
    for (const f of s.files) assert.ok(existsSync(new URL(`../../${filePath(f)}`, import.meta.url)), `${s.name}: ${filePath(f)}`);
  }
  assert.ok(scenarioFiles().includes('runtime-reload'));
  for (const leg of LEGS) assert.ok(KNOWN_BRANCHES.includes(leg.haproxy.branch), leg.name);
  assert.deepEqual(LEGS.map((l) => l.haproxy.branch), ['2.6', '3.0', '3.2', '3.4']);
  assert.ok(LEGS.some((l) => l.etcd.branch === '3.5') && LEGS.some((l) => l.etcd.branch === '3.4'));
});
