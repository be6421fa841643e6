import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { flagsMarkdown } from '../../scripts/flags-doc.js';

test('README config reference is the flag table of src/config.ts', async () => {
  const readme = await readFile(new URL('../../README.md', import.meta.url), 'utf8');
  const m = /<!-- FLAGS:BEGIN -->\n([\s\S]*?)\n<!-- FLAGS:END -->/.exec(readme);
  assert.ok(m, 'README.md has the FLAGS markers');
  assert.equal(m[1], flagsMarkdown(), 'regenerate with: node --import tsx scripts/flags-doc.ts');
});

test('README quick start names the two commands', async () => {
  const readme = await readFile(new URL('../../README.md', import.meta.url), 'utf8');
  assert.match(readme, /npm run demo/);
  assert.match(readme, /npm test/);
});
