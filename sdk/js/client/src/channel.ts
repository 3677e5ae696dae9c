import { UpdraftError, fromWire } from './errors.js';
import { backoffDelay } from './backoff.js';
import type { ServerMessage } from './frames.js';
import type {
  ChangePayload,
  HistoryPage,
  Member,
  MessagePayload,
  Position,
  PresencePayload,
  SubscribeResult,
} from './types.js';
import type { Conn, RealtimeClient } from './realtime.js';

/** Options of `realtime.channel(topic, options)`. */
export interface ChannelOptions {
  /** Row filter for a table topic, such as `status=eq.paid&amount=gt.100`. */
  filter?: string;
  /** Receive the topic's presence events and member list. */
  presence?: boolean;
  /** Replay the last N retained messages on the first subscribe (chat scroll-back, late joiners). */
  rewind?: number;
}

/**
 * What the optional callback of `subscribe(cb)` receives, besides the
 * promise:
 * - `subscribed`: the server accepted the subscription; `resubscribed` is
 *   true after a reconnect.
 * - `recovery_failed`: after a reconnect the server could not replay what
 *   was missed (the topic's history was lost or no longer reaches back):
 *   reload the state some other way. Live delivery continues.
 * - `retrying`: a resubscribe was refused with a transient error
 *   (`unavailable`, `rate_limited`, `internal`); it is retried with backoff.
 * - `error`: the subscription ended: the server refused it, or the client
 *   stopped for good.
 */
export type ChannelStatusEvent =
  | { status: 'subscribed'; result: SubscribeResult; resubscribed: boolean }
  | { status: 'recovery_failed'; result: SubscribeResult }
  | { status: 'retrying'; error: UpdraftError }
  | { status: 'error'; error: UpdraftError };

type Handler = (payload: any) => void;
type Deferred<T> = { promise: Promise<T>; resolve: (v: T) => void; reject: (e: unknown) => void };

function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void, reject!: (e: unknown) => void;
  const promise = new Promise<T>((a, b) => ((resolve = a), (reject = b)));
  return { promise, resolve, reject };
}

const TABLE_EVENTS = ['INSERT', 'UPDATE', 'DELETE'];
const TRANSIENT = ['unavailable', 'rate_limited', 'internal'];

/**
 * One topic, as `realtime.channel(topic, options)` returns it. Register
 * handlers with `on`, then `subscribe()`.
 *
 * @example
 * realtime.channel('chat/engineering')
 *   .on('message', ({ data, from }) => addMessage(data, from))
 *   .subscribe()
 */
export class RealtimeChannel {
  readonly topic: string;
  readonly options: Readonly<ChannelOptions>;

  /** @internal */ _wanted = false;
  /** @internal */ _joinedOn: Conn | null = null;
  private rt: RealtimeClient;
  private handlers = new Map<string, Handler[]>();
  private statusCbs: ((e: ChannelStatusEvent) => void)[] = [];
  private gen = 0;
  private everJoined = false;
  private pos: Position | null = null;
  private list: Member[] = [];
  private first: Deferred<SubscribeResult> | null = null;
  private last: SubscribeResult | null = null;
  private retryTimer: unknown = null;
  private retries = 0;
  private tracking = false;
  private trackState: unknown;
  private trackedOn: Conn | null = null;
  private trackWaiters: Deferred<void>[] = [];

  /** @internal Use `realtime.channel()`. */
  constructor(rt: RealtimeClient, topic: string, options: ChannelOptions) {
    this.rt = rt;
    this.topic = topic;
    this.options = options;
  }

  /** `closed` before subscribe and after unsubscribe, `joining` until the server accepts, then `joined`. */
  get state(): 'closed' | 'joining' | 'joined' {
    return !this._wanted ? 'closed' : this._joinedOn ? 'joined' : 'joining';
  }

  /** The last position seen on the topic (the last event's, else the subscribe reply's). */
  get position(): Position | null {
    return this.pos && { ...this.pos };
  }

  /**
   * Registers a handler and returns the channel, for chaining. `event` is
   * an event name, `'*'` for every event, `INSERT`/`UPDATE`/`DELETE` on a
   * table topic, or `'presence'` for presence changes (with the
   * `presence` option).
   */
  on(event: 'INSERT' | 'UPDATE' | 'DELETE', cb: (p: ChangePayload) => void): this;
  on(event: 'presence', cb: (p: PresencePayload) => void): this;
  on(event: string, cb: (p: MessagePayload & Partial<ChangePayload>) => void): this;
  on(event: string, cb: Handler): this {
    const list = this.handlers.get(event);
    if (list) list.push(cb);
    else this.handlers.set(event, [cb]);
    return this;
  }

  /**
   * Subscribes (connecting first if needed) and resolves with the server's
   * reply; rejects with an UpdraftError (`forbidden`, `bad_request`, ...).
   * Calling it again while subscribed returns the same outcome. After a
   * reconnect the channel resubscribes by itself from the last position
   * seen; `onStatus` hears about it (see ChannelStatusEvent).
   */
  subscribe(onStatus?: (e: ChannelStatusEvent) => void): Promise<SubscribeResult> {
    if (onStatus) this.statusCbs.push(onStatus);
    const err = this.rt._claim(this);
    if (err) return Promise.reject(err);
    if (this._wanted) {
      if (this.last && !this.first) return Promise.resolve(this.last);
      return (this.first ??= deferred()).promise;
    }
    this._wanted = true;
    this.gen++;
    this.first = deferred();
    const c = this.rt._conn();
    if (c) this._join(c);
    return this.first.promise;
  }

  /**
   * Ends the subscription (and presence membership), and drops every
   * handler registered with `on` or `subscribe`, so that a component that
   * registers them again and resubscribes (React StrictMode) sees each
   * event once. A pending `subscribe()` promise rejects with `closed`.
   */
  unsubscribe(): Promise<void> {
    this.handlers.clear();
    this.statusCbs = [];
    if (!this._wanted) return Promise.resolve();
    const c = this.rt._conn();
    const tracked = this.tracking;
    this.reset(new UpdraftError('closed', `unsubscribed from ${this.topic}`), true);
    if (!c) return Promise.resolve();
    // Other channels of the topic keep the server subscription: only leave presence.
    const shared = this.rt._subscribers(this.topic).length > 0;
    if (shared && !tracked) return Promise.resolve();
    const msg = { type: shared ? 'untrack' : 'unsubscribe', topic: this.topic };
    return new Promise((resolve) => this.rt._send(c, msg, () => resolve()));
  }

  /** Publishes an event on this (application) topic; resolves with its position. */
  publish(event: string, data?: unknown, opts: { persist?: boolean } = {}): Promise<Position> {
    const msg = { type: 'publish', topic: this.topic, event, data, persist: opts.persist || undefined };
    return this.rt._request(msg, false) as Promise<Position>;
  }

  /**
   * Reads retained history, oldest first: the `limit` (default 50, at most
   * 1000) newest messages with seq below `before`. Page back with
   * `before` = the oldest seq received.
   */
  getHistory(opts: { limit?: number; before?: number } = {}): Promise<HistoryPage> {
    const msg = { type: 'history', topic: this.topic, limit: opts.limit, before: opts.before };
    return (this.rt._request(msg, true) as Promise<HistoryPage>).then((p) => ({ epoch: p.epoch, messages: p.messages ?? [] }));
  }

  /** Lists the topic's presence members (asks the server). */
  members(): Promise<Member[]> {
    return (this.rt._request({ type: 'members', topic: this.topic }, true) as Promise<{ members?: Member[] }>).then(
      (d) => d.members ?? [],
    );
  }

  /** The member list as this channel knows it (with the `presence` option). */
  get presence(): Member[] {
    return this.list.slice();
  }

  /**
   * Makes this connection a member of the topic with `state` (a JSON
   * object), or updates its state. The channel must be subscribed (or
   * subscribing). The state is tracked again after every reconnect.
   */
  track(state?: Record<string, unknown>): Promise<void> {
    if (!this._wanted) return Promise.reject(new UpdraftError('bad_request', `track ${this.topic}: subscribe first`));
    this.tracking = true;
    this.trackState = state;
    const d = deferred<void>();
    this.trackWaiters.push(d);
    this.flushTrack();
    return d.promise;
  }

  /** Ends this connection's membership; it is no longer tracked after reconnects. */
  untrack(): Promise<void> {
    this.tracking = false;
    this.trackedOn = null;
    // Tracks still waiting for the subscribe are superseded.
    this.trackWaiters.splice(0).forEach((w) => w.resolve());
    const c = this._joinedOn;
    if (!c || c !== this.rt._conn()) return Promise.resolve();
    return new Promise((resolve, reject) =>
      this.rt._send(c, { type: 'untrack', topic: this.topic }, (r) =>
        !r || r.ok ? resolve() : reject(fromWire(r.error, 'untrack failed')),
      ),
    );
  }

  private flushTrack(): void {
    const c = this._joinedOn;
    if (!c || c !== this.rt._conn() || (!this.trackWaiters.length && this.trackedOn === c)) return;
    const waiters = this.trackWaiters.splice(0);
    const gen = this.gen;
    this.trackedOn = c;
    this.rt._send(c, { type: 'track', topic: this.topic, state: this.trackState }, (r) => {
      if (!r) {
        // The connection dropped: the state is tracked again after the resubscribe.
        if (gen === this.gen) this.trackWaiters.push(...waiters);
        else waiters.forEach((w) => w.reject(new UpdraftError('closed', `unsubscribed from ${this.topic}`)));
        return;
      }
      if (r.ok) waiters.forEach((w) => w.resolve());
      else {
        const err = fromWire(r.error, 'track failed');
        waiters.forEach((w) => w.reject(err));
        // A re-track after a reconnect has nobody waiting: report it.
        if (!waiters.length) this.rt._report(err);
      }
    });
  }

  /** @internal Sends the (re)subscribe on connection c. */
  _join(c: Conn): void {
    this._joinedOn = null;
    const gen = this.gen;
    const since = this.everJoined && this.pos ? { ...this.pos } : undefined;
    const rewind = !since && !this.everJoined ? this.options.rewind : undefined;
    const msg = {
      type: 'subscribe',
      topic: this.topic,
      filter: this.options.filter,
      // The server subscription is shared by the topic's channels: presence if any wants it.
      presence: this.rt._subscribers(this.topic).some((ch) => ch.options.presence) || undefined,
      since,
      rewind,
    };
    this.rt._send(c, msg, (r) => r && gen === this.gen && this._wanted && this.joined(c, !!(since || rewind), !!since, r));
  }

  /** @internal The connection this channel was joined on ended. */
  _lost(c: Conn): void {
    if (this._joinedOn === c) this._joinedOn = null;
  }

  /** @internal The client stopped for good (err), or disconnect() was called (quiet). */
  _stopped(err: UpdraftError, quiet: boolean): void {
    this._joinedOn = null;
    this.trackedOn = null;
    if (this.first) {
      if (quiet) this.first.promise.catch(() => {});
      this.first.reject(err);
      this.first = null;
    }
    this.trackWaiters.splice(0).forEach((w) => w.reject(err));
    if (!quiet) this.emitStatus({ status: 'error', error: err });
  }

  private joined(c: Conn, replays: boolean, resumed: boolean, r: ServerMessage): void {
    if (!r.ok) {
      const err = fromWire(r.error, `subscribe ${this.topic} failed`);
      if (this.everJoined && TRANSIENT.includes(err.code)) {
        this.emitStatus({ status: 'retrying', error: err });
        const gen = this.gen;
        this.retryTimer = this.rt._timer(() => {
          const now = this.rt._conn();
          if (gen === this.gen && now === c) this._join(c);
        }, backoffDelay(this.retries++, this.rt._backoff[0], this.rt._backoff[1], Math.random));
        return;
      }
      this.reset(err, false);
      this.emitStatus({ status: 'error', error: err });
      return;
    }
    const d = (r.data ?? {}) as SubscribeResult & { members?: Member[] };
    const res: SubscribeResult = { epoch: d.epoch ?? '', seq: d.seq ?? 0, recovered: !!d.recovered };
    this.retries = 0;
    this._joinedOn = c;
    if (!replays || !res.recovered) {
      // Only what follows the reply's position comes.
      const p = this.pos;
      if (!p || p.epoch !== res.epoch || p.seq < res.seq) this.pos = { epoch: res.epoch, seq: res.seq };
    } else if (!this.pos) {
      // A rewind replays messages above seq - rewind: resume from there if none comes.
      this.pos = { epoch: res.epoch, seq: Math.max(0, res.seq - (this.options.rewind ?? 0)) };
    }
    const resubscribed = this.everJoined;
    this.everJoined = true;
    this.last = res;
    if (this.first) {
      this.first.resolve(res);
      this.first = null;
    }
    this.emitStatus({ status: 'subscribed', result: res, resubscribed });
    if (resumed && !res.recovered) this.emitStatus({ status: 'recovery_failed', result: res });
    if (this.options.presence) this.sync(d.members ?? []);
    if (this.tracking && this.trackedOn !== c) this.trackedOn = null;
    if (this.tracking) this.flushTrack();
  }

  /** Replaces the member list, telling handlers what changed. */
  private sync(next: Member[]): void {
    const prev = this.list;
    this.list = next.slice();
    const byConn = new Map(prev.map((m) => [m.conn, m]));
    for (const m of next) {
      const old = byConn.get(m.conn);
      byConn.delete(m.conn);
      if (!old) this.emit('presence', { event: 'join', member: m, members: this.presence });
      else if (JSON.stringify(old.state) !== JSON.stringify(m.state))
        this.emit('presence', { event: 'update', member: m, members: this.presence });
    }
    for (const m of byConn.values()) this.emit('presence', { event: 'leave', member: m, members: this.presence });
  }

  /** @internal An event message for this topic. */
  _event(m: ServerMessage): void {
    const epoch = m.epoch as string;
    const seq = m.seq as number;
    const p = this.pos;
    if (p && epoch && epoch === p.epoch && seq <= p.seq) return; // already seen
    this.pos = { epoch, seq };
    const event = m.event as string;
    const payload: Record<string, unknown> = { event, topic: this.topic, data: m.data, epoch, seq, ts: m.ts };
    if (TABLE_EVENTS.includes(event)) {
      payload.old = m.old;
      payload.truncated = !!m.truncated;
    } else payload.from = m.from;
    this.emit(event, payload);
    this.emit('*', payload);
  }

  /** @internal A presence message for this topic. */
  _presence(m: ServerMessage): void {
    if (!this.options.presence) return;
    const member = m.member as Member;
    let event = m.event as PresencePayload['event'];
    const i = this.list.findIndex((x) => x.conn === member.conn);
    if (event === 'leave') this.list = this.list.filter((x) => x.conn !== member.conn);
    else if (i < 0) this.list.push(member);
    else {
      // A join of a listed conn (the presence store re-registering) is an update.
      this.list[i] = member;
      event = 'update';
    }
    this.emit('presence', { event, member, members: this.presence });
  }

  private reset(err: UpdraftError, quiet: boolean): void {
    this._wanted = false;
    this.gen++;
    this.rt._release(this);
    this._joinedOn = null;
    this.everJoined = false;
    this.pos = null;
    this.list = [];
    this.tracking = false;
    this.trackedOn = null;
    this.rt._clearTimer(this.retryTimer);
    if (this.first) {
      if (quiet) this.first.promise.catch(() => {});
      this.first.reject(err);
      this.first = null;
    }
    this.trackWaiters.splice(0).forEach((w) => w.reject(err));
  }

  private emit(event: string, payload: unknown): void {
    for (const h of this.handlers.get(event) ?? []) this.rt._call(h, payload);
  }

  private emitStatus(e: ChannelStatusEvent): void {
    for (const cb of this.statusCbs) this.rt._call(cb, e);
  }
}
