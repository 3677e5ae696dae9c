// npm run bench: how many messages per second one client dispatches: frames
// of 100 events (as the gateway packs them under load), split, parsed,
// deduplicated by seq and handed to an on() handler. Run after npm run build.
import { RealtimeClient } from '../dist/index.js';

let sock;
class BenchSocket {
  constructor() {
    sock = this;
    queueMicrotask(() => this.onopen?.({}));
  }
  send(text) {
    const m = JSON.parse(text);
    const data = m.type === 'connect' ? { session: 's', node: 'n', heartbeat: 3600 } : { epoch: 'e1', seq: 0 };
    queueMicrotask(() => this.onmessage?.({ data: JSON.stringify({ type: 'reply', ref: m.ref, ok: true, data }) }));
  }
  close() {}
}

const rt = new RealtimeClient({ url: 'ws://bench/api/realtime', WebSocket: BenchSocket });
let got = 0;
await rt.channel('chat/bench').on('message', () => got++).subscribe();

const perFrame = 100;
const frames = 10_000;
let seq = 0;
const frame = () => {
  const lines = [];
  for (let i = 0; i < perFrame; i++) {
    seq++;
    lines.push(`{"type":"event","topic":"chat/bench","event":"message","epoch":"e1","seq":${seq},"ts":1764170000123,"from":"user-7","data":{"text":"hello world","n":${seq}}}`);
  }
  return lines.join('\n');
};
const input = Array.from({ length: frames }, frame); // built before timing
const t0 = performance.now();
for (const data of input) sock.onmessage({ data });
const ms = performance.now() - t0;
if (got !== perFrame * frames) throw new Error(`dispatched ${got} of ${perFrame * frames}`);
console.log(`${got} messages in ${ms.toFixed(0)} ms: ${Math.round(got / (ms / 1000)).toLocaleString('en-US')} messages/s (frames of ${perFrame}, node ${process.version})`);
rt.disconnect();
