/** A message from the server, as parsed from a frame. */
export interface ServerMessage {
  type: string;
  [k: string]: unknown;
}

/**
 * Splits a text frame into its messages: the server packs several,
 * separated by "\n"; blank lines are ignored and so is a line that is not
 * a JSON object with a type (reported through onBad).
 */
export function splitFrame(text: string, onBad?: (line: string) => void): ServerMessage[] {
  const out: ServerMessage[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    try {
      const m = JSON.parse(line) as ServerMessage;
      if (m && typeof m === 'object' && typeof m.type === 'string') {
        out.push(m);
        continue;
      }
    } catch {
      // reported below
    }
    onBad?.(line);
  }
  return out;
}
