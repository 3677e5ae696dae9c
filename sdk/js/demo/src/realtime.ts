// The demo's one RealtimeClient and the small hooks its views share. It
// connects anonymously to the page's own origin (make run allows that);
// a later change moves the hooks to @updraft/react.
import { useEffect, useRef, useState } from 'react';
import { RealtimeClient, UpdraftError, type ChannelOptions, type Member, type RealtimeChannel, type Status } from '@updraft/client';

const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
export const realtime = new RealtimeClient({ url: `${scheme}://${location.host}/api/realtime` });

/** Who this tab is: a name and a colour, kept for the tab's life. */
export interface Identity {
  name: string;
  color: string;
}

const first = ['Ada', 'Grace', 'Linus', 'Margaret', 'Ken', 'Barbara', 'Dennis', 'Frances', 'Alan', 'Radia', 'Guido', 'Hedy'];
const last = ['Falcon', 'Kestrel', 'Heron', 'Swift', 'Osprey', 'Wren', 'Lark', 'Finch', 'Merlin', 'Plover'];
const colors = ['#6366f1', '#0ea5e9', '#10b981', '#f59e0b', '#ef4444', '#ec4899', '#8b5cf6', '#14b8a6', '#f97316'];
const pick = <T,>(xs: T[]): T => xs[Math.floor(Math.random() * xs.length)]!;

function loadIdentity(): Identity {
  try {
    const saved = JSON.parse(sessionStorage.getItem('updraft-demo-identity') ?? 'null') as Identity | null;
    if (saved && typeof saved.name === 'string' && typeof saved.color === 'string') return saved;
  } catch {
    // a fresh identity below
  }
  const id = { name: `${pick(first)} ${pick(last)}`, color: pick(colors) };
  try {
    sessionStorage.setItem('updraft-demo-identity', JSON.stringify(id));
  } catch {
    // storage may be off: the identity lasts for this page only
  }
  return id;
}

export const me: Identity = loadIdentity();

/** The connection status, re-rendered on every change. */
export function useStatus(): Status {
  const [status, setStatus] = useState<Status>(realtime.status);
  useEffect(() => {
    setStatus(realtime.status);
    return realtime.onStatusChange(setStatus);
  }, []);
  return status;
}

/** What the page knows of the server (GET /config.json, served with the app). */
export interface ServerConfig {
  mode: 'embedded' | 'cluster';
  tables: string[];
}

let configPromise: Promise<ServerConfig> | null = null;
export function useServerConfig(): ServerConfig | null {
  const [config, setConfig] = useState<ServerConfig | null>(null);
  useEffect(() => {
    configPromise ??= fetch('/config.json').then((r) => (r.ok ? (r.json() as Promise<ServerConfig>) : { mode: 'cluster', tables: [] }));
    let live = true;
    configPromise.then(
      (c) => live && setConfig(c),
      () => live && setConfig({ mode: 'cluster', tables: [] }),
    );
    return () => {
      live = false;
    };
  }, []);
  return config;
}

export type ChannelState = { phase: 'joining' } | { phase: 'joined' } | { phase: 'error'; error: UpdraftError };

type Handlers = Record<string, (payload: any) => void>;

/**
 * Subscribes to topic while the component is mounted, calling the latest
 * handlers (they may change between renders without a resubscribe). The
 * channel is removed on unmount, so a view mounted again starts afresh
 * (with its rewind). Handlers must name the same events on every render.
 */
export function useChannel(topic: string | null, options: ChannelOptions, handlers: Handlers): [RealtimeChannel | null, ChannelState] {
  const latest = useRef(handlers);
  latest.current = handlers;
  const [channel, setChannel] = useState<RealtimeChannel | null>(null);
  const [state, setState] = useState<ChannelState>({ phase: 'joining' });
  const key = JSON.stringify([topic, options]);
  useEffect(() => {
    if (!topic) return;
    const ch = realtime.channel(topic, options);
    for (const event of Object.keys(latest.current)) ch.on(event, (p: unknown) => latest.current[event]?.(p));
    setChannel(ch);
    setState({ phase: 'joining' });
    let live = true;
    ch.subscribe((e) => {
      if (!live) return;
      if (e.status === 'subscribed') setState({ phase: 'joined' });
      else if (e.status === 'retrying') setState({ phase: 'joining' });
      else if (e.status === 'error' && e.error) setState({ phase: 'error', error: e.error });
    }).then(
      () => live && setState({ phase: 'joined' }),
      (error: unknown) => live && setState({ phase: 'error', error: error instanceof UpdraftError ? error : new UpdraftError('internal', String(error)) }),
    );
    return () => {
      live = false;
      setChannel(null);
      void realtime.removeChannel(ch).catch(() => {});
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps -- key stands for topic and options
  }, [key]);
  return [channel, state];
}

/**
 * Joins the presence of a channel subscribed with `presence: true`, with
 * `state` (tracked again when it changes), and returns the live members.
 */
export function usePresence<S>(channel: RealtimeChannel | null, state: S | null): Member<S>[] {
  const [members, setMembers] = useState<Member<S>[]>([]);
  useEffect(() => {
    if (!channel) {
      setMembers([]);
      return;
    }
    setMembers(channel.presence as Member<S>[]);
    let live = true;
    channel.on('presence', ({ members }) => live && setMembers(members as Member<S>[]));
    return () => {
      live = false;
    };
  }, [channel]);
  const tracked = JSON.stringify(state);
  useEffect(() => {
    if (!channel || state === null) return;
    channel.track(state as Record<string, unknown>).catch(() => {
      // reported by the channel's status; the state is tracked again on reconnect
    });
    // eslint-disable-next-line react-hooks/exhaustive-deps -- tracked stands for state
  }, [channel, tracked]);
  return members;
}

/** Re-renders every `ms` milliseconds (for relative times). */
export function useTick(ms: number): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), ms);
    return () => clearInterval(t);
  }, [ms]);
  return now;
}

export function ago(ts: number, now: number): string {
  const s = Math.max(0, Math.round((now - ts) / 1000));
  if (s < 5) return 'just now';
  if (s < 60) return `${s}s ago`;
  const m = Math.round(s / 60);
  if (m < 60) return `${m} min ago`;
  return new Date(ts).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

export function initials(name: string): string {
  return name
    .split(/\s+/)
    .map((w) => w[0] ?? '')
    .join('')
    .slice(0, 2)
    .toUpperCase();
}
