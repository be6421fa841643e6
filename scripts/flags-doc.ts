/**
 * Prints the README's config reference (markdown) from the flag table in src/config.ts.
 * `node --import tsx scripts/flags-doc.ts` — paste between the FLAGS markers in README.md;
 * test/unit/readme.test.ts fails when they drift apart.
 */
import { FLAGS, envName, COMMANDS } from '../src/config.js';

export function flagsMarkdown(): string {
  const lines = ['| flag | env var | default | commands | meaning |', '|---|---|---|---|---|'];
  for (const f of FLAGS) {
    const def = f.default === undefined ? '' : `\`${f.default}\``;
    const cmds = f.commands.length === COMMANDS.length ? 'all' : f.commands.join(', ');
    const choices = f.choices ? ` (${f.choices.map((c) => `\`${c}\``).join(', ')})` : '';
    lines.push(`| \`--${f.name}\` | \`${envName(f.name)}\` | ${def} | ${cmds} | ${f.help.replaceAll('|', '\\|')}${choices} |`);
  }
  return lines.join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) process.stdout.write(flagsMarkdown() + '\n');
