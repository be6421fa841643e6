/** `show backend` and its parser. */
import { ReplyParseError } from '../errors.js';
import { makeCommand, type Command } from './command.js';

export function showBackend(): Command {
  return makeCommand('show backend');
}

/** `# name` header then one backend name per line. */
export function parseBackendList(text: string): string[] {
  const lines = text.split('\n').filter((l) => l.trim() !== '');
  if (lines[0] !== '# name') throw new ReplyParseError('show backend: missing "# name" header', { reply: text.slice(0, 200) });
  return lines.slice(1).map((l) => l.trim());
}
