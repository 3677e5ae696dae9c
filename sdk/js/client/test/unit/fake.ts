// A fake clock and a fake WebSocket that let unit tests drive the client
// deterministically: no network, no real time.
import type { Clock, WebSocketLike } from '../../src/realtime.js';

export class FakeClock implements Clock {
  t = 1_700_000_000_000;
  private next = 1;
  private timers = new Map<number, { at: number; fn: () => void }>();
  now(): number {
    return this.t;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.next++;
    this.timers.set(id, { at: this.t + Math.max(0, ms), fn });
    return id;
  }
  clearTimeout(h: unknown): void {
    this.timers.delete(h as number);
  }
  /** Runs every timer due within ms, in order, letting promises settle after each. */
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    for (let i = 0; i < 10_000; i++) {
      await flush();
      let best: [number, { at: number; fn: () => void }] | undefined;
      for (const e of this.timers) if (e[1].at <= end && (!best || e[1].at < best[1].at)) best = e;
      if (!best) break;
      this.timers.delete(best[0]);
      this.t = best[1].at;
      best[1].fn();
    }
    this.t = end;
    await flush();
  }
  /** The delays of the pending timers, from now. */
  pending(): number[] {
    return [...this.timers.values()].map((x) => x.at - this.t).sort((a, b) => a - b);
  }
}

export async function flush(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
}

export class FakeSocket implements WebSocketLike {
  static all: FakeSocket[] = [];
  /** Whether the fake server answers pings by itself. */
  static answerPings = true;
  static last(): FakeSocket {
    const s = FakeSocket.all[FakeSocket.all.length - 1];
    if (!s) throw new Error('no socket was opened');
    return s;
  }
  onopen: ((ev: any) => void) | null = null;
  onmessage: ((ev: any) => void) | null = null;
  onclose: ((ev: any) => void) | null = null;
  onerror: ((ev: any) => void) | null = null;
  sent: any[] = [];
  closedByClient: number | undefined;
  constructor(
    public url: string,
    public protocols?: string | string[],
  ) {
    FakeSocket.all.push(this);
  }
  send(data: string): void {
    const m = JSON.parse(data);
    this.sent.push(m);
    if (m.type === 'ping' && FakeSocket.answerPings) queueMicrotask(() => this.reply(m));
  }
  close(code?: number): void {
    this.closedByClient = code ?? 1005;
  }
  // ---- the server's side ----
  open(): void {
    this.onopen?.({});
  }
  /** Sends one frame holding msgs, separated by "\n". */
  recv(...msgs: object[]): void {
    this.onmessage?.({ data: msgs.map((m) => JSON.stringify(m)).join('\n') });
  }
  serverClose(code: number, reason = ''): void {
    this.onclose?.({ code, reason });
  }
  /** The last sent message of a type. */
  lastOf(type: string): any {
    return [...this.sent].reverse().find((m) => m.type === type);
  }
  ofType(type: string): any[] {
    return this.sent.filter((m) => m.type === type);
  }
  reply(req: { ref: string }, data: object = {}): void {
    this.recv({ type: 'reply', ref: req.ref, ok: true, data });
  }
  refuse(req: { ref: string }, code: string, message = code): void {
    this.recv({ type: 'reply', ref: req.ref, ok: false, error: { code, message } });
  }
  /** Opens and accepts the connect. */
  accept(session = 's_1'): void {
    this.open();
    this.reply(this.lastOf('connect'), { session, node: 'n1', heartbeat: 25, max_message: 65536 });
  }
}

/** An HS256-shaped JWT with the given claims (the signature is not checked by the client). */
export function fakeJwt(claims: object): string {
  const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}.sig`;
}
