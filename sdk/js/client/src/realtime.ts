import { UpdraftError, fromWire, type ErrorCode } from './errors.js';
import { backoffDelay, closeReaction } from './backoff.js';
import { splitFrame, type ServerMessage } from './frames.js';
import { renewDelay, tokenExp, tokenStale } from './token.js';
import { RealtimeChannel, type ChannelOptions } from './channel.js';

/** The client's connection status. */
export type Status = 'idle' | 'connecting' | 'connected' | 'reconnecting' | 'disconnected';

/** The part of the WebSocket API the client uses (browsers, Node 22, `ws`). */
export interface WebSocketLike {
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: any) => void) | null;
  onclose: ((ev: any) => void) | null;
  onerror: ((ev: any) => void) | null;
}

/** A WebSocket constructor, such as `ws`'s default export on Node 20. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** Timers the client uses; tests pass a fake one. */
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** Options of `new RealtimeClient(options)`. */
export interface RealtimeClientOptions {
  /**
   * The gateway's WebSocket URL, `ws://host:8080/api/realtime`. A list of
   * URLs (gateway nodes) is tried in turn: each reconnect moves to the next.
   */
  url: string | string[];
  /** A JWT (with `exp`). Ignored when `getToken` is set. */
  token?: string;
  /**
   * Supplies a token: for the first connect, when the server closed with
   * 4001 (expired or bad token), and before the current token's `exp`
   * (sent as a `refresh` on the open connection).
   */
  getToken?: () => string | Promise<string>;
  /** Consecutive failed connection attempts before giving up (status `disconnected`). Default: unlimited. */
  maxReconnectAttempts?: number;
  /** Reconnect backoff: the delay is random in [0, min(maxMs, minMs·2^attempt)]. Defaults 100 and 10000. */
  backoff?: { minMs?: number; maxMs?: number };
  /** A WebSocket constructor for runtimes without a global one (Node 20: `import WebSocket from 'ws'`). */
  WebSocket?: WebSocketConstructor;
  /** How long a request (and a connection attempt) may take. Default 10000 ms. */
  requestTimeoutMs?: number;
  /**
   * Receives errors nobody waits for: exceptions thrown by handlers and
   * callbacks, a failed getToken, a refused token refresh or re-track.
   * Default: console.error.
   */
  onError?: (err: unknown) => void;
  /** For tests: the timers to use. */
  clock?: Clock;
  /** For tests: the random source of the backoff, in [0, 1). */
  random?: () => number;
}

/** @internal One WebSocket connection. */
export class Conn {
  pending = new Map<string, (r: ServerMessage | null) => void>();
  max = 65536;
  heartbeat = 25;
  session = '';
  node = '';
  ended = false;
  refused: UpdraftError | null = null;
  bye: { code: number; reason: string } | null = null;
  timer: unknown = null;
  pingOut = false;
  constructor(public ws: WebSocketLike) {}
}

interface Queued {
  msg: Record<string, unknown>;
  retry: boolean;
  done: boolean;
  resolve: (v: unknown) => void;
  reject: (e: UpdraftError) => void;
  timer: unknown;
}

const realClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
};

/**
 * A connection to an Updraft gateway that reconnects by itself and
 * resubscribes its channels from the last position seen.
 *
 * @example
 * const realtime = new RealtimeClient({ url: 'ws://localhost:8080/api/realtime', getToken })
 * realtime.onStatusChange((s) => console.log(s))
 * realtime.channel('orders').on('INSERT', ({ data }) => add(data)).subscribe()
 */
export class RealtimeClient {
  private o: RealtimeClientOptions;
  private urls: string[];
  private urlAt = 0;
  private clock: Clock;
  private st: Status = 'idle';
  private listeners = new Set<(s: Status) => void>();
  private cur: Conn | null = null;
  private dialing: Conn | null = null;
  private opening = false;
  private attempt = 0;
  private everConnected = false;
  private retryTimer: unknown = null;
  private renewTimer: unknown = null;
  private queue: Queued[] = [];
  private channels = new Map<string, RealtimeChannel>();
  /** The subscribed channels of each topic: they share one server subscription. */
  private byTopic = new Map<string, RealtimeChannel[]>();
  private token: string | undefined;
  private needToken = false;
  private stopErr: UpdraftError | null = null;
  private byUser = false;
  private waiters: { resolve: () => void; reject: (e: unknown) => void }[] = [];
  private ref = 0;
  private offline = false;
  private closeInfo: { code: number; reason: string } | null = null;
  private unlisten: (() => void) | null = null;
  /** @internal */ _backoff: [number, number];

  constructor(options: RealtimeClientOptions) {
    this.o = options;
    this.urls = Array.isArray(options.url) ? options.url.slice() : [options.url];
    if (!this.urls.length) throw new UpdraftError('bad_request', 'RealtimeClient: url is empty');
    this.clock = options.clock ?? realClock;
    this.token = options.token;
    this._backoff = [options.backoff?.minMs ?? 100, options.backoff?.maxMs ?? 10_000];
  }

  /** The current status. */
  get status(): Status {
    return this.st;
  }

  /** Why the client is `disconnected`, when the server or a failure stopped it. */
  get error(): UpdraftError | null {
    return this.stopErr;
  }

  /** How the last connection ended: the close code (or the disconnect message's) and reason. */
  get lastClose(): { code: number; reason: string } | null {
    return this.closeInfo;
  }

  /** The session id of the current connection (presence's `conn`). */
  get session(): string {
    return this.cur?.session ?? '';
  }

  /** The gateway node of the current connection. */
  get node(): string {
    return this.cur?.node ?? '';
  }

  /** Calls `cb` with every status change; returns a function that stops it. */
  onStatusChange(cb: (status: Status) => void): () => void {
    this.listeners.add(cb);
    return () => void this.listeners.delete(cb);
  }

  /**
   * Connects, unless connected or connecting, and resolves once connected.
   * Rejects when the client stops first (see `error`). Other calls connect
   * lazily, so calling this is optional. After `disconnect()` it connects
   * again and resubscribes the channels that were subscribed.
   */
  connect(): Promise<void> {
    if (this.cur) return Promise.resolve();
    const p = new Promise<void>((resolve, reject) => this.waiters.push({ resolve, reject }));
    if (this.st === 'idle' || this.st === 'disconnected') {
      this.stopErr = null;
      this.attempt = 0;
      this.listen();
      this.setStatus(this.everConnected ? 'reconnecting' : 'connecting');
      this.open();
    }
    return p;
  }

  /**
   * Closes the connection and stops reconnecting: status `disconnected`.
   * Pending requests reject with `closed`. Channels stay subscribed on the
   * client's side: `connect()`, or any later call (which connects lazily),
   * resubscribes them from where they were.
   */
  disconnect(): void {
    this.stop(new UpdraftError('closed', 'disconnect() was called'), true);
  }

  /**
   * Returns the channel for `topic` and `options`: the same object for the
   * same topic and options. Several channels of one topic (see
   * `createChannel`) share the server subscription when their filters
   * agree; a channel with another filter is refused with `bad_request`.
   */
  channel(topic: string, options: ChannelOptions = {}): RealtimeChannel {
    const opts: ChannelOptions = {};
    if (options.filter) opts.filter = options.filter;
    if (options.presence) opts.presence = true;
    if (options.rewind) opts.rewind = options.rewind;
    const key = JSON.stringify([topic, opts.filter, opts.presence, opts.rewind]);
    let ch = this.channels.get(key);
    if (!ch) this.channels.set(key, (ch = new RealtimeChannel(this, topic, opts)));
    return ch;
  }

  /**
   * Returns a new channel object of its own, which `channel()` never
   * returns: its `unsubscribe()` drops only its own handlers, and other
   * channels of the topic stay subscribed (they share one server
   * subscription, which ends with the last of them). Libraries that
   * subscribe on the app's behalf (the React hooks) use it.
   */
  createChannel(topic: string, options: ChannelOptions = {}): RealtimeChannel {
    const opts: ChannelOptions = {};
    if (options.filter) opts.filter = options.filter;
    if (options.presence) opts.presence = true;
    if (options.rewind) opts.rewind = options.rewind;
    return new RealtimeChannel(this, topic, opts);
  }

  /** Unsubscribes a channel and forgets it: `channel()` then returns a new object. */
  removeChannel(ch: RealtimeChannel): Promise<void> {
    for (const [k, v] of this.channels) if (v === ch) this.channels.delete(k);
    return ch.unsubscribe();
  }

  /** Sends a ping and resolves with the round-trip time in ms. */
  async ping(): Promise<number> {
    const t = this.clock.now();
    await this._request({ type: 'ping' }, true);
    return this.clock.now() - t;
  }

  // ---- internals used by RealtimeChannel ----

  /** @internal */
  _conn(): Conn | null {
    return this.cur;
  }

  /** @internal Registers ch as the topic's subscriber; returns an error when it cannot subscribe. */
  _claim(ch: RealtimeChannel): UpdraftError | null {
    const err = this.refusal();
    if (err) return err;
    this.ensure();
    if (ch._wanted) return null;
    const list = this.byTopic.get(ch.topic) ?? [];
    if (list.some((o) => o !== ch && (o.options.filter ?? '') !== (ch.options.filter ?? '')))
      return new UpdraftError('bad_request', `${ch.topic} is already subscribed through a channel with another filter`);
    if (!list.includes(ch)) list.push(ch);
    this.byTopic.set(ch.topic, list);
    return null;
  }

  /** @internal */
  _release(ch: RealtimeChannel): void {
    const list = this.byTopic.get(ch.topic);
    if (!list) return;
    const rest = list.filter((o) => o !== ch);
    if (rest.length) this.byTopic.set(ch.topic, rest);
    else this.byTopic.delete(ch.topic);
  }

  /** @internal The subscribed channels of topic. */
  _subscribers(topic: string): readonly RealtimeChannel[] {
    return this.byTopic.get(topic) ?? [];
  }

  private subscribed(): RealtimeChannel[] {
    return [...this.byTopic.values()].flat();
  }

  /** @internal */
  _timer(fn: () => void, ms: number): unknown {
    return this.clock.setTimeout(fn, ms);
  }

  /** @internal */
  _clearTimer(h: unknown): void {
    if (h !== null) this.clock.clearTimeout(h);
  }

  /** @internal Calls a user callback, reporting what it throws. */
  _call(fn: (a: any) => void, arg: unknown): void {
    try {
      fn(arg);
    } catch (e) {
      this._report(e);
    }
  }

  /** @internal Hands an error nobody waits for to onError. */
  _report(e: unknown): void {
    (this.o.onError ?? console.error)(e);
  }

  /**
   * @internal Sends msg on c with a fresh ref; onReply gets the reply, or
   * null when the connection ended first.
   */
  _send(c: Conn, msg: Record<string, unknown>, onReply: (r: ServerMessage | null) => void): void {
    if (c.ended) return onReply(null);
    const ref = String(++this.ref);
    const text = JSON.stringify({ ...msg, ref });
    if (text.length > c.max / 3 && new TextEncoder().encode(text).length > c.max) {
      return onReply({ type: 'reply', ok: false, error: { code: 'too_large', message: `${msg.type} is larger than ${c.max} bytes` } });
    }
    c.pending.set(ref, onReply);
    try {
      c.ws.send(text);
    } catch {
      this.kill(c, 'send failed');
    }
  }

  /**
   * @internal Sends a request once connected (connecting lazily) and
   * resolves with the reply's data. `retry` requests (reads) are sent again
   * after a reconnect; others reject with `disconnected`.
   */
  _request(msg: Record<string, unknown>, retry: boolean): Promise<unknown> {
    const err = this.refusal();
    if (err) return Promise.reject(err);
    this.ensure();
    return new Promise((resolve, reject) => {
      const q: Queued = { msg, retry, done: false, resolve, reject, timer: null };
      q.timer = this.clock.setTimeout(() => {
        this.queue = this.queue.filter((x) => x !== q);
        this.settle(q, new UpdraftError('timeout', `${msg.type}: no reply within ${this.timeout()} ms`));
      }, this.timeout());
      this.dispatch(q);
    });
  }

  // ---- connection ----

  private timeout(): number {
    return this.o.requestTimeoutMs ?? 10_000;
  }

  /** Connects lazily: from idle, and after disconnect() (not after the server stopped the client). */
  private ensure(): void {
    if (this.st === 'idle' || (this.st === 'disconnected' && this.byUser)) this.connect().catch(() => {});
  }

  /** Why calls fail at once: the server stopped the client, and connect() was not called since. */
  private refusal(): UpdraftError | null {
    return this.st === 'disconnected' && !this.byUser ? this.stopErr : null;
  }

  private dispatch(q: Queued): void {
    const c = this.cur;
    if (!c) {
      this.queue.push(q);
      return;
    }
    this._send(c, q.msg, (r) => {
      if (q.done) return;
      if (!r) {
        if (q.retry && !this.stopErr) this.dispatch(q);
        else this.settle(q, this.stopErr ?? new UpdraftError('disconnected', `${q.msg.type}: the connection dropped before the reply`));
      } else if (r.ok) this.settle(q, null, r.data ?? {});
      else this.settle(q, fromWire(r.error, `${q.msg.type} failed`));
    });
  }

  private settle(q: Queued, err: UpdraftError | null, data?: unknown): void {
    if (q.done) return;
    q.done = true;
    this.clock.clearTimeout(q.timer);
    if (err) q.reject(err);
    else q.resolve(data);
  }

  private setStatus(s: Status): void {
    if (this.st === s) return;
    this.st = s;
    for (const l of [...this.listeners]) this._call(l, s);
  }

  private async open(): Promise<void> {
    this.retryTimer = null;
    if (this.stopErr || this.offline || this.cur || this.dialing || this.opening) return;
    let token = this.token;
    if (this.o.getToken && (this.needToken || tokenStale(token, this.clock.now()))) {
      this.opening = true;
      try {
        token = await this.o.getToken();
      } catch (e) {
        this._report(e);
        if (!this.stopErr) this.failed(1006);
        return;
      } finally {
        this.opening = false;
      }
      if (this.stopErr || this.cur || this.dialing) return;
      this.token = token;
      this.needToken = false;
    }
    const WS = this.o.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WS) return this.stop(new UpdraftError('closed', 'no WebSocket: pass the WebSocket option (Node 20: the ws package)'), false);
    const url = this.urls[this.urlAt % this.urls.length]!;
    let ws: WebSocketLike;
    try {
      ws = new WS(url, 'updraft.v1');
    } catch (e) {
      return this.stop(new UpdraftError('bad_request', `WebSocket ${url}: ${(e as Error).message}`), false);
    }
    const c = new Conn(ws);
    this.dialing = c;
    c.timer = this.clock.setTimeout(() => this.kill(c, 'connect timed out'), this.timeout());
    ws.onopen = () =>
      this._send(c, { type: 'connect', token, sdk: 'js/0.1.0' }, (r) => {
        if (!r) return;
        if (!r.ok) {
          c.refused = fromWire(r.error, 'connect refused');
          return; // the server closes (4001)
        }
        this.connected(c, (r.data ?? {}) as Record<string, unknown>);
      });
    ws.onmessage = (ev: { data: unknown }) => this.frame(c, ev.data);
    ws.onclose = (ev: { code?: number; reason?: string }) => this.closed(c, ev.code ?? 1006, ev.reason ?? '');
    ws.onerror = () => {};
  }

  private connected(c: Conn, d: Record<string, unknown>): void {
    this.clock.clearTimeout(c.timer);
    this.dialing = null;
    this.cur = c;
    c.session = String(d.session ?? '');
    c.node = String(d.node ?? '');
    if (typeof d.max_message === 'number') c.max = d.max_message;
    if (typeof d.heartbeat === 'number' && d.heartbeat > 0) c.heartbeat = d.heartbeat;
    this.attempt = 0;
    this.everConnected = true;
    this.heartbeat(c);
    this.scheduleRenew();
    for (const ch of this.subscribed()) ch._join(c);
    for (const x of this.queue.splice(0)) this.dispatch(x);
    for (const w of this.waiters.splice(0)) w.resolve();
    this.setStatus('connected');
  }

  /** Pings every heartbeat; a ping unanswered by the next one means the connection is dead. */
  private heartbeat(c: Conn): void {
    c.timer = this.clock.setTimeout(() => {
      if (c.ended) return;
      if (c.pingOut) return this.kill(c, 'no reply to ping');
      c.pingOut = true;
      this._send(c, { type: 'ping' }, () => (c.pingOut = false));
      this.heartbeat(c);
    }, c.heartbeat * 1000);
  }

  private scheduleRenew(): void {
    this._clearTimer(this.renewTimer);
    this.renewTimer = null;
    if (!this.o.getToken) return;
    const d = renewDelay(tokenExp(this.token), this.clock.now());
    if (d !== undefined) this.renewTimer = this.clock.setTimeout(() => void this.renew(), d);
  }

  /** Gets a new token and sends it as a refresh; retries in a second on failure. */
  private async renew(): Promise<void> {
    this.renewTimer = null;
    const c = this.cur;
    if (!c || !this.o.getToken) return;
    const retry = () => {
      if (this.cur === c && this.clock.now() < (tokenExp(this.token) ?? 0) * 1000)
        this.renewTimer = this.clock.setTimeout(() => void this.renew(), 1000);
    };
    let token: string;
    try {
      token = await this.o.getToken();
    } catch (e) {
      this._report(e);
      return retry();
    }
    if (this.cur !== c) return;
    this._send(c, { type: 'refresh', token }, (r) => {
      if (!r) return;
      if (r.ok) {
        this.token = token;
        if (this.cur === c) this.scheduleRenew();
      } else {
        this._report(fromWire(r.error, 'refresh refused'));
        retry();
      }
    });
  }

  private frame(c: Conn, data: unknown): void {
    if (typeof data !== 'string' || c.ended) return;
    for (const m of splitFrame(data)) {
      switch (m.type) {
        case 'reply': {
          const cb = c.pending.get(m.ref as string);
          c.pending.delete(m.ref as string);
          cb?.(m);
          break;
        }
        case 'event':
          if (c === this.cur) for (const ch of this._subscribers(m.topic as string)) ch._event(m);
          break;
        case 'presence':
          if (c === this.cur) for (const ch of this._subscribers(m.topic as string)) ch._presence(m);
          break;
        case 'disconnect':
          c.bye = { code: Number(m.code), reason: String(m.reason ?? '') };
          break;
      }
    }
  }

  /** Abandons a connection that is dead or late, as if it closed abnormally. */
  private kill(c: Conn, reason: string): void {
    try {
      c.ws.close();
    } catch {
      // closing a socket that never opened may throw
    }
    this.closed(c, 1006, reason);
  }

  private closed(c: Conn, code: number, reason: string): void {
    if (c.ended) return;
    c.ended = true;
    c.ws.onopen = c.ws.onmessage = c.ws.onclose = null;
    this.clock.clearTimeout(c.timer);
    if (c.bye && (code === 1005 || code === 1006 || code === 1000)) ({ code, reason } = c.bye);
    if (c.refused?.code === 'unauthorized') code = 4001;
    this.closeInfo = { code, reason };
    const was = this.cur === c;
    if (was) {
      this.cur = null;
      this._clearTimer(this.renewTimer);
      this.renewTimer = null;
    }
    if (this.dialing === c) this.dialing = null;
    for (const ch of this.subscribed()) ch._lost(c);
    const pending = [...c.pending.values()];
    c.pending.clear();
    for (const cb of pending) cb(null);
    if (this.stopErr) return;
    const reaction = closeReaction(code, !!this.o.getToken);
    if (code === 4001) this.needToken = true;
    if (reaction === 'stop') {
      const why = reason || c.refused?.message || `closed by the server (${code})`;
      return this.stop(new UpdraftError(code === 4001 ? 'unauthorized' : 'closed', why, { closeCode: code }), false);
    }
    if (this.everConnected) this.setStatus('reconnecting');
    if (was) this.attempt = 0;
    this.failed(code, reaction === 'now' && was);
  }

  /** Schedules the next connection attempt, on the next URL. */
  private failed(code: number, now = false): void {
    const max = this.o.maxReconnectAttempts ?? Infinity;
    if (this.attempt >= max) {
      return this.stop(new UpdraftError('unavailable', `gave up after ${max} reconnect attempts (last close ${code})`, { closeCode: code }), false);
    }
    this.urlAt++;
    const delay = now ? 0 : backoffDelay(this.attempt, this._backoff[0], this._backoff[1], this.o.random ?? Math.random);
    this.attempt++;
    this.retryTimer = this.clock.setTimeout(() => void this.open(), delay);
  }

  private stop(err: UpdraftError, quiet: boolean): void {
    if (this.st === 'disconnected' && this.stopErr) return;
    this.stopErr = err;
    this.byUser = quiet;
    this._clearTimer(this.retryTimer);
    this._clearTimer(this.renewTimer);
    this.retryTimer = this.renewTimer = null;
    this.unlisten?.();
    this.unlisten = null;
    for (const c of [this.cur, this.dialing]) {
      if (!c) continue;
      try {
        c.ws.close(1000);
      } catch {
        // ignore
      }
      this.closed(c, 1000, 'closed by the client');
    }
    for (const q of this.queue.splice(0)) this.settle(q, err);
    for (const w of this.waiters.splice(0)) w.reject(err);
    for (const ch of this.subscribed()) ch._stopped(err, quiet);
    this.setStatus('disconnected');
  }

  /** Browser offline/online: pause reconnecting while offline, retry at once when back. */
  private listen(): void {
    const g = globalThis as unknown as {
      addEventListener?: (t: string, f: () => void) => void;
      removeEventListener?: (t: string, f: () => void) => void;
      navigator?: { onLine?: boolean };
    };
    if (this.unlisten || !g.addEventListener || !g.removeEventListener || !g.navigator) return;
    this.offline = g.navigator.onLine === false;
    const off = () => {
      this.offline = true;
      this._clearTimer(this.retryTimer);
      this.retryTimer = null;
    };
    const on = () => {
      this.offline = false;
      if (!this.cur && !this.dialing && !this.stopErr) {
        this._clearTimer(this.retryTimer);
        this.attempt = 0;
        void this.open();
      }
    };
    g.addEventListener('offline', off);
    g.addEventListener('online', on);
    this.unlisten = () => {
      g.removeEventListener!('offline', off);
      g.removeEventListener!('online', on);
    };
  }
}

export type { ErrorCode };
