/**
 * Line iteration over a Runtime API reply. Replies such as `show stat` at 10 000 servers are
 * megabytes: `split('\n').filter(...)` would hold a second copy of the reply as an array of
 * lines before the first row is parsed. This yields one line at a time instead.
 */

/** The lines of `text` that are not blank, in order, without their `\n`. */
export function* replyLines(text: string): Generator<string, void, undefined> {
  let from = 0;
  while (from < text.length) {
    let end = text.indexOf('\n', from);
    if (end < 0) end = text.length;
    const line = text.slice(from, end);
    from = end + 1;
    if (line.trim() !== '') yield line;
  }
}
