/**
 * Text from devices, bounded and safe to keep and to show. `String.prototype.slice` of a long
 * string returns a view that keeps the whole original alive (V8's sliced strings), so a cut
 * that is stored must be a copy, or a 10-character excerpt of a 4 MiB reply holds 4 MiB.
 */

/**
 * Control characters (which could move a terminal's cursor back over "reported by device …" or
 * clear the screen), line and paragraph separators and bidirectional overrides, written as \uXXXX.
 */
const UNPRINTABLE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

/** At most `max` characters (the last one `…` when cut), as a string of its own. */
export function cutText(text: string, max: number): string {
  const cut = text.length <= max ? text : `${text.slice(0, max - 1)}…`;
  return Buffer.from(cut, 'utf8').toString('utf8');
}

/** A device's text made safe to show and to keep: printable, at most `max` characters, a string of its own. */
export function printableText(text: string, max: number): string {
  return cutText(text.slice(0, max * 6).replace(UNPRINTABLE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`), max);
}
