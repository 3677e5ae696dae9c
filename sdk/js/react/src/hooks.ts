import { useCallback, useEffect, useRef, useState } from 'react';
import { UpdraftError } from '@updraft/client';
import type {
  ChangePayload,
  ChannelStatusEvent,
  HistoryMessage,
  Member,
  MessagePayload,
  Position,
  PresencePayload,
  RealtimeChannel,
} from '@updraft/client';
import { useClient, useIsoLayoutEffect } from './provider.js';
import { registryOf, type Listener, type SharedTopic, type SubscriptionState } from './registry.js';

/**
 * Handlers of useChannel, by event name: `INSERT`/`UPDATE`/`DELETE` on a
 * table topic, any event name on an application topic, `'*'` for every
 * event, and `presence` for members joining, updating and leaving.
 */
export interface ChannelHandlers {
  INSERT?: (p: ChangePayload) => void;
  UPDATE?: (p: ChangePayload) => void;
  DELETE?: (p: ChangePayload) => void;
  presence?: (p: PresencePayload) => void;
  '*'?: (p: MessagePayload & Partial<ChangePayload>) => void;
  [event: string]: ((p: any) => void) | undefined;
}

/** Options of useChannel. */
export interface UseChannelOptions {
  /** Row filter of a table topic (`status=eq.paid`). Hooks of one provider share a topic, so they must agree on it. */
  filter?: string;
  /** Replay the last N retained messages when the topic is first subscribed. */
  rewind?: number;
  /** Hears the subscription's status events (subscribed, recovery_failed, retrying, error). */
  onStatus?: (e: ChannelStatusEvent) => void;
}

/** What useChannel returns. */
export interface UseChannelResult {
  /** `idle` without a topic, `joining` until the server accepts, `joined`, or `error`. */
  state: SubscriptionState;
  /** Why the state is `error` (an UpdraftError with its protocol code). */
  error: UpdraftError | null;
  /** Publishes an event on the topic; resolves with its position. */
  publish: (event: string, data?: unknown, opts?: { persist?: boolean }) => Promise<Position>;
  /** The shared channel, for reads (`getHistory`, `members`). Do not call its `on`/`unsubscribe`. */
  channel: RealtimeChannel | null;
}

interface Snapshot {
  state: SubscriptionState;
  error: UpdraftError | null;
  members: Member[];
  channel: RealtimeChannel | null;
}

const IDLE: Snapshot = { state: 'idle', error: null, members: [], channel: null };

function snapshot(t: SharedTopic): Snapshot {
  return { state: t.state, error: t.error, members: t.members, channel: t.channel };
}

/**
 * Takes a reference on the shared subscription of topic for as long as the
 * component is mounted (and topic and filter stay the same), and attaches
 * the listener that `make` returns. The snapshot re-renders the component.
 */
function useShared(topic: string | null | undefined, filter: string | undefined, rewind: number | undefined, make: (t: SharedTopic) => Listener, onAcquire?: (t: SharedTopic) => () => void): Snapshot {
  const realtime = useClient();
  const [snap, setSnap] = useState<Snapshot>(IDLE);
  const makeRef = useRef(make);
  const acquireRef = useRef(onAcquire);
  useIsoLayoutEffect(() => {
    makeRef.current = make;
    acquireRef.current = onAcquire;
  });
  useEffect(() => {
    if (!topic) {
      setSnap(IDLE);
      return undefined;
    }
    let t: SharedTopic;
    try {
      t = registryOf(realtime).acquire(topic, { filter, rewind });
    } catch (e) {
      setSnap({ ...IDLE, state: 'error', error: e instanceof UpdraftError ? e : new UpdraftError('internal', String(e)) });
      return undefined;
    }
    const l: Listener = { ...makeRef.current(t) };
    const userChange = l.change;
    l.change = () => {
      setSnap(snapshot(t));
      userChange?.();
    };
    t.listeners.add(l);
    const stop = acquireRef.current?.(t);
    setSnap(snapshot(t));
    return () => {
      stop?.();
      t.listeners.delete(l);
      t.release();
    };
  }, [realtime, topic, filter, rewind]);
  return snap;
}

/**
 * Subscribes to a topic while the component is mounted and calls the
 * handler for each event. Handlers may change on every render without a
 * resubscribe (the latest ones are called). Every hook of one provider
 * shares one subscription per topic, so a topic used by several components
 * is subscribed once; it ends when the last one unmounts.
 *
 * @example
 * useChannel('chat/engineering', {
 *   message: ({ data, from }) => setMessages((m) => [...m, { ...data, from }]),
 * })
 * useChannel('orders', { INSERT: ({ data }) => setRows((r) => [data, ...r]) }, { filter: 'status=eq.paid' })
 */
export function useChannel(topic: string | null | undefined, handlers: ChannelHandlers = {}, options: UseChannelOptions = {}): UseChannelResult {
  const realtime = useClient();
  const handlersRef = useRef(handlers);
  const statusRef = useRef(options.onStatus);
  useIsoLayoutEffect(() => {
    handlersRef.current = handlers;
    statusRef.current = options.onStatus;
  });
  const snap = useShared(topic, options.filter, options.rewind, () => ({
    event: (p: MessagePayload & Partial<ChangePayload>) => {
      const h = handlersRef.current;
      (h[p.event] as ((p: unknown) => void) | undefined)?.(p);
      h['*']?.(p);
    },
    presence: (p: PresencePayload) => handlersRef.current.presence?.(p),
    status: (e: ChannelStatusEvent) => statusRef.current?.(e),
  }));
  const publish = useCallback(
    (event: string, data?: unknown, opts?: { persist?: boolean }): Promise<Position> => {
      if (!topic) return Promise.reject(new UpdraftError('bad_request', 'useChannel: no topic'));
      return realtime.channel(topic).publish(event, data, opts);
    },
    [realtime, topic],
  );
  return { state: snap.state, error: snap.error, publish, channel: snap.channel };
}

/** What usePresence returns: the live member list, and the subscription's state. */
export interface UsePresenceResult<S = any> {
  /** Every member of the topic (this connection included once it tracks), in join order. */
  members: Member<S>[];
  state: SubscriptionState;
  error: UpdraftError | null;
}

/**
 * Makes this connection a member of an application topic with `state`
 * while the component is mounted, updates the state when it changes (by
 * value: a new object with the same content sends nothing), and returns
 * the live member list. Without `state` it only watches. It leaves (untrack)
 * on unmount.
 *
 * @example
 * const { members } = usePresence('doc/42', { name: user.name, typing })
 * return <span>{members.length} viewing</span>
 */
export function usePresence<S extends Record<string, unknown> = Record<string, unknown>>(topic: string | null | undefined, state?: S): UsePresenceResult<S> {
  const key = useRef({}).current;
  const json = state === undefined ? undefined : JSON.stringify(state);
  const sharedRef = useRef<SharedTopic | null>(null);
  const snap = useShared(
    topic,
    undefined,
    undefined,
    () => ({}),
    (t) => {
      sharedRef.current = t;
      return () => {
        t.setTrack(key, undefined);
        sharedRef.current = null;
      };
    },
  );
  // Follows the state by value, on the shared topic held above.
  useEffect(() => {
    const t = sharedRef.current;
    if (!t) return;
    t.setTrack(key, json === undefined ? undefined : (JSON.parse(json) as Record<string, unknown>));
  }, [json, key, snap.channel]);
  return { members: snap.members as Member<S>[], state: snap.state, error: snap.error };
}

/** Options of useHistory. */
export interface UseHistoryOptions {
  /** Messages per page (default 50, at most 1000). */
  limit?: number;
  /** Also append the topic's new events as they arrive (subscribes to the topic). Default false. */
  live?: boolean;
}

/** What useHistory returns. */
export interface UseHistoryResult<T = any> {
  /** The messages loaded so far, oldest first. */
  messages: HistoryMessage<T>[];
  /** A page is being read. */
  loading: boolean;
  error: UpdraftError | null;
  /** False once a page came back short: the history holds nothing older. */
  hasMore: boolean;
  /** Reads the page before the oldest message loaded, and prepends it. */
  loadMore: () => Promise<void>;
}

function merge<T>(a: HistoryMessage<T>[], b: HistoryMessage<T>[]): HistoryMessage<T>[] {
  const bySeq = new Map<number, HistoryMessage<T>>();
  for (const m of a) bySeq.set(m.seq, m);
  for (const m of b) bySeq.set(m.seq, m);
  return [...bySeq.values()].sort((x, y) => x.seq - y.seq);
}

/**
 * Reads a topic's retained history, newest page first, and pages back with
 * `loadMore()`. With `live`, new events are appended as they arrive.
 *
 * @example
 * const { messages, loading, hasMore, loadMore } = useHistory('chat/engineering', { limit: 20, live: true })
 * <button disabled={loading || !hasMore} onClick={loadMore}>Older</button>
 */
export function useHistory<T = any>(topic: string | null | undefined, options: UseHistoryOptions = {}): UseHistoryResult<T> {
  const realtime = useClient();
  const limit = options.limit ?? 50;
  const [view, setView] = useState<{ topic: string | null | undefined; messages: HistoryMessage<T>[]; loading: boolean; error: UpdraftError | null; hasMore: boolean }>(
    { topic, messages: [], loading: !!topic, error: null, hasMore: !!topic },
  );
  const gen = useRef(0);
  const busy = useRef(false);
  const oldest = useRef<number | undefined>(undefined);

  const read = useCallback(
    async (g: number, before: number | undefined) => {
      if (!topic) return;
      busy.current = true;
      setView((v) => ({ ...v, loading: true, error: null }));
      try {
        const page = await realtime.channel(topic).getHistory({ limit, before });
        if (g !== gen.current) return;
        const msgs = page.messages as HistoryMessage<T>[];
        if (msgs.length) oldest.current = Math.min(oldest.current ?? Infinity, msgs[0]!.seq);
        setView((v) => ({ ...v, messages: merge(msgs, v.messages), loading: false, hasMore: msgs.length >= limit }));
      } catch (e) {
        if (g !== gen.current) return;
        setView((v) => ({ ...v, loading: false, error: e instanceof UpdraftError ? e : new UpdraftError('internal', String(e)) }));
      } finally {
        if (g === gen.current) busy.current = false;
      }
    },
    [realtime, topic, limit],
  );

  useEffect(() => {
    const g = ++gen.current;
    oldest.current = undefined;
    busy.current = false;
    setView({ topic, messages: [], loading: !!topic, error: null, hasMore: !!topic });
    void read(g, undefined);
    return () => {
      gen.current++;
    };
  }, [read, topic]);

  useChannel(options.live ? topic : null, {
    '*': (p) => {
      const m: HistoryMessage<T> = { event: p.event, data: p.data, seq: p.seq, ts: p.ts };
      if (p.from !== undefined) m.from = p.from;
      setView((v) => ({ ...v, messages: merge(v.messages, [m]) }));
    },
  });

  const loadMore = useCallback(async () => {
    if (busy.current || !view.hasMore) return;
    await read(gen.current, oldest.current);
  }, [read, view.hasMore]);

  const stale = view.topic !== topic;
  return {
    messages: stale ? [] : view.messages,
    loading: stale ? !!topic : view.loading,
    error: stale ? null : view.error,
    hasMore: stale ? !!topic : view.hasMore,
    loadMore,
  };
}
