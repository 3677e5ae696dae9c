import { UpdraftError } from '@updraft/client';
import type { ChannelStatusEvent, Member, PresencePayload, RealtimeChannel, RealtimeClient } from '@updraft/client';

/** Where a hook's subscription stands. */
export type SubscriptionState = 'idle' | 'joining' | 'joined' | 'error';

/** @internal What a hook attaches to a shared topic. */
export interface Listener {
  event?(payload: any): void;
  presence?(payload: PresencePayload): void;
  status?(e: ChannelStatusEvent): void;
  /** The state, error or member list changed. */
  change?(): void;
}

/** @internal Options that decide the server subscription of a topic. */
export interface TopicOptions {
  filter?: string | undefined;
  rewind?: number | undefined;
}

/** Application topics have a slash; table topics (no slash) carry no presence. */
export const isTableTopic = (topic: string): boolean => !topic.includes('/');

/**
 * @internal One channel of a topic, shared by every hook of one client
 * that uses the topic, and counted: `unsubscribe()` drops every handler of
 * a channel, so the hooks never register handlers on it themselves; they
 * attach listeners here, and the channel is unsubscribed when the last
 * hook lets go. Application topics are subscribed with presence, so that
 * useChannel and usePresence share one subscription.
 */
export class SharedTopic {
  refs = 0;
  state: SubscriptionState = 'joining';
  error: UpdraftError | null = null;
  members: Member[] = [];
  readonly listeners = new Set<Listener>();
  /** The states usePresence hooks want tracked; the last one wins. */
  readonly trackers = new Map<object, Record<string, unknown>>();
  /** JSON of the state tracked on the server, null when untracked. */
  tracked: string | null = null;

  constructor(
    readonly registry: Registry,
    readonly topic: string,
    readonly filter: string | undefined,
    readonly channel: RealtimeChannel,
  ) {
    channel
      .on('*', (p) => this.each((l) => l.event?.(p)))
      .on('presence', (p) => {
        this.members = p.members;
        this.each((l) => l.presence?.(p));
        this.changed();
      });
    channel
      .subscribe((e) => {
        if (e.status === 'subscribed') {
          this.state = 'joined';
          this.error = null;
          this.members = channel.presence;
        } else if (e.status === 'retrying') this.state = 'joining';
        else if (e.status === 'error') this.fail(e.error);
        this.each((l) => l.status?.(e));
        this.changed();
      })
      .catch((e: unknown) => {
        // `closed` is our own unsubscribe; anything else is a refusal.
        if (e instanceof UpdraftError && e.code === 'closed' && this.refs === 0) return;
        if (this.state !== 'error') {
          this.fail(e instanceof UpdraftError ? e : new UpdraftError('internal', String(e)));
          this.changed();
        }
      });
  }

  private fail(err: UpdraftError): void {
    this.state = 'error';
    this.error = err;
  }

  private each(fn: (l: Listener) => void): void {
    for (const l of [...this.listeners]) {
      try {
        fn(l);
      } catch (e) {
        this.registry.report(e);
      }
    }
  }

  /** @internal */
  changed(): void {
    this.each((l) => l.change?.());
  }

  /** Drops one reference; the subscription ends soon after the last one (not at once: StrictMode re-mounts). */
  release(): void {
    this.refs--;
    this.registry.schedule();
  }

  /** Sets (or, with undefined, removes) what the hook `key` wants tracked. */
  setTrack(key: object, state: Record<string, unknown> | undefined): void {
    if (state === undefined) this.trackers.delete(key);
    else {
      this.trackers.delete(key);
      this.trackers.set(key, state);
    }
    this.registry.schedule();
  }

  /** @internal Brings the server's presence in line with the trackers. */
  sync(): void {
    let want: Record<string, unknown> | undefined;
    for (const s of this.trackers.values()) want = s;
    const json = want === undefined ? null : JSON.stringify(want);
    if (json === this.tracked) return;
    this.tracked = json;
    const done = (e: unknown) => {
      this.fail(e instanceof UpdraftError ? e : new UpdraftError('internal', String(e)));
      this.changed();
    };
    if (want !== undefined) this.channel.track(want).catch(done);
    else this.channel.untrack().catch(done);
  }
}

/**
 * @internal The shared topics of one client. Releases and presence changes
 * are applied on a zero-delay timer, so that React StrictMode's
 * unmount-and-mount of an effect keeps the one subscription (and the one
 * presence membership) instead of ending and renewing it.
 */
export class Registry {
  private topics = new Map<string, SharedTopic>();
  private timer: ReturnType<typeof setTimeout> | null = null;

  constructor(readonly realtime: RealtimeClient) {}

  /** Takes a reference on topic, subscribing it if nobody holds it. */
  acquire(topic: string, opts: TopicOptions): SharedTopic {
    const t = this.topics.get(topic);
    if (t) {
      if ((opts.filter || undefined) !== t.filter)
        throw new UpdraftError('bad_request', `${topic} is already used with filter ${JSON.stringify(t.filter ?? '')} by another hook of this client`);
      t.refs++;
      return t;
    }
    const options = { filter: opts.filter || undefined, rewind: opts.rewind || undefined, presence: !isTableTopic(topic) };
    // A channel object of our own: the app's `realtime.channel(topic)` and its
    // unsubscribe() never touch it (they share the server subscription).
    const created = new SharedTopic(this, topic, options.filter, this.realtime.createChannel(topic, options));
    created.refs = 1;
    this.topics.set(topic, created);
    return created;
  }

  /** @internal */
  report(e: unknown): void {
    console.error(e);
  }

  /** @internal */
  schedule(): void {
    if (this.timer === null) this.timer = setTimeout(() => this.flush(), 0);
  }

  private flush(): void {
    this.timer = null;
    for (const [topic, t] of this.topics) {
      if (t.refs > 0) t.sync();
      else {
        this.topics.delete(topic);
        void this.realtime.removeChannel(t.channel);
      }
    }
  }
}

const registries = new WeakMap<RealtimeClient, Registry>();

/** @internal The registry of a client. */
export function registryOf(realtime: RealtimeClient): Registry {
  let r = registries.get(realtime);
  if (!r) registries.set(realtime, (r = new Registry(realtime)));
  return r;
}
