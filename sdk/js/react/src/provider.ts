import { createContext, createElement, useCallback, useContext, useEffect, useLayoutEffect, useMemo, useRef, useSyncExternalStore } from 'react';
import type { ReactNode } from 'react';
import { RealtimeClient } from '@updraft/client';
import type { RealtimeClientOptions, Status } from '@updraft/client';

/** @internal useLayoutEffect in a browser, useEffect on a server (no warning). */
export const useIsoLayoutEffect = typeof document !== 'undefined' ? useLayoutEffect : useEffect;

const Ctx = createContext<RealtimeClient | null>(null);

/** Props of `<RealtimeProvider>`: a ready `client`, or the options of a `RealtimeClient` to create. */
export type RealtimeProviderProps = Partial<RealtimeClientOptions> & {
  /**
   * A client you created. The provider connects it on mount and leaves it
   * connected on unmount (it is yours). Without it, the provider creates a
   * client from the other props, and disconnects it on unmount.
   */
  client?: RealtimeClient;
  children?: ReactNode;
};

/**
 * Gives its subtree one Updraft connection. It creates a `RealtimeClient`
 * from its props (or uses `client`) and connects on mount. A new `url` or
 * `token` makes a new client; `getToken` may change freely (the latest one
 * is called); the other options are read when the client is created.
 *
 * @example
 * <RealtimeProvider url="ws://localhost:8080/api/realtime" getToken={fetchToken}>
 *   <App />
 * </RealtimeProvider>
 */
export function RealtimeProvider(props: RealtimeProviderProps): ReactNode {
  const { client, children, ...options } = props;
  const getToken = useRef(options.getToken);
  useIsoLayoutEffect(() => {
    getToken.current = options.getToken;
  });
  const urlKey = JSON.stringify(options.url ?? null);
  const hasGetToken = !!options.getToken;
  const realtime = useMemo(() => {
    if (client) return client;
    if (!options.url) throw new Error('RealtimeProvider: pass url (and token or getToken), or client');
    return new RealtimeClient({
      ...options,
      url: options.url,
      getToken: hasGetToken ? () => getToken.current!() : undefined,
    });
    // The other options are read once, when the client is made.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [client, urlKey, options.token, hasGetToken]);

  // Disconnecting waits a tick, so that StrictMode's unmount-and-mount keeps the connection.
  const stopping = useRef<ReturnType<typeof setTimeout> | null>(null);
  useEffect(() => {
    if (stopping.current !== null) clearTimeout(stopping.current);
    stopping.current = null;
    realtime.connect().catch(() => {
      // The status (disconnected) and realtime.error tell the app.
    });
    if (client) return undefined;
    return () => {
      stopping.current = setTimeout(() => {
        stopping.current = null;
        realtime.disconnect();
      }, 0);
    };
  }, [realtime, client]);

  return createElement(Ctx.Provider, { value: realtime }, children);
}

/** What useRealtime returns. */
export interface UseRealtimeResult {
  /** The provider's client: `realtime.channel(topic)` and the rest of the `@updraft/client` API. */
  realtime: RealtimeClient;
  /** The connection status; the component re-renders when it changes. */
  status: Status;
}

/**
 * The provider's client and its connection status.
 *
 * @example
 * const { realtime, status } = useRealtime()
 * if (status === 'reconnecting') return <Banner>Reconnecting…</Banner>
 */
export function useRealtime(): UseRealtimeResult {
  const realtime = useClient();
  const subscribe = useCallback((cb: () => void) => realtime.onStatusChange(cb), [realtime]);
  const read = useCallback(() => realtime.status, [realtime]);
  const status = useSyncExternalStore(subscribe, read, read);
  return useMemo(() => ({ realtime, status }), [realtime, status]);
}

/** @internal The provider's client; throws outside a provider. */
export function useClient(): RealtimeClient {
  const realtime = useContext(Ctx);
  if (!realtime) throw new Error('useRealtime and the Updraft hooks need a <RealtimeProvider> above them');
  return realtime;
}
