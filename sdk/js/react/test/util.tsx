// Helpers of the hook tests: mounting React trees in happy-dom, a
// WebSocket that counts the frames the client sends, and polling.
import './dom.js';
import { createRoot, type Root } from 'react-dom/client';
import type { ReactNode } from 'react';
import WebSocket from 'ws';
import { waitFor } from '../../client/test/integration/harness.js';

export { waitFor };

/** Every frame sent by the CountingWebSocket instances, parsed. */
export const sent: { type: string; topic?: string; state?: unknown }[] = [];

/** ws, recording each frame it sends in `sent`. */
export class CountingWebSocket extends WebSocket {
  override send(data: any, ...rest: any[]): void {
    try {
      sent.push(JSON.parse(String(data)));
    } catch {
      // not JSON
    }
    (super.send as (...a: unknown[]) => void)(data, ...rest);
  }
}

/** How many frames of type (on topic) were sent so far. */
export function count(type: string, topic: string): number {
  return sent.filter((f) => f.type === type && f.topic === topic).length;
}

export interface Mounted {
  root: Root;
  el: HTMLElement;
  render(node: ReactNode): void;
  unmount(): void;
}

/** Renders node into a fresh element of the document. */
export function mount(node: ReactNode): Mounted {
  const el = document.createElement('div');
  document.body.appendChild(el);
  const root = createRoot(el);
  root.render(node);
  return {
    root,
    el,
    render: (n) => root.render(n),
    unmount: () => {
      root.unmount();
      el.remove();
    },
  };
}

/** Resolves after the pending zero-delay timers (the hooks' deferred releases) ran. */
export function tick(ms = 20): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
