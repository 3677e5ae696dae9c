import { UpdraftError, fromWire } from './errors.js';
import type { HistoryPage, Member, Position } from './types.js';

/** Options of `createServerClient`. */
export interface ServerClientOptions {
  /** The gateway's http(s) base URL, `http://localhost:8080`. */
  url: string;
  /** The gateway's `UPDRAFT_API_KEY`. */
  apiKey: string;
  /** A fetch implementation; default the global one (Node 18+). */
  fetch?: typeof fetch;
}

/** One message of `emit` and `emitBatch`. */
export interface EmitMessage {
  topic: string;
  event: string;
  data?: unknown;
  /** Also store the message in PostgreSQL (batched). */
  persist?: boolean;
  /** Store it in PostgreSQL and answer only once it is stored. */
  durable?: boolean;
}

/** What `stream` resolves with once the body ended. */
export interface StreamResult {
  firstSeq: number;
  lastSeq: number;
  count: number;
  epoch: string;
}

/** The server helper's interface; see `createServerClient`. */
export interface ServerClient {
  /** The product page's call shape: `socket.emit('message', data, 'chat/engineering')`. */
  socket: { emit(event: string, data: unknown, topic: string): Promise<Position> };
  /** Publishes one message (`POST /api/v1/emit`). */
  emit(msg: EmitMessage): Promise<Position>;
  /**
   * Publishes up to 1000 messages in one step (`POST /api/v1/emit/batch`).
   * Resolves with one result per message, in order: a position, or the
   * UpdraftError of a message that failed alone.
   */
  emitBatch(messages: Omit<EmitMessage, 'persist' | 'durable'>[]): Promise<(Position | UpdraftError)[]>;
  /**
   * Streams `iterable`'s values to `topic` as it yields them
   * (`POST /api/v1/stream`): each value (any JSON value; a string token
   * too) becomes an `event` message, or with `rollup` (`'40ms'`) one
   * array per window, and watchers get `event.end` (or `event.error`).
   * If the iterable throws, the request is cut off (watchers get
   * `event.error`) and the promise rejects with what it threw.
   */
  stream(topic: string, event: string, iterable: AsyncIterable<unknown> | Iterable<unknown>, opts?: { rollup?: string }): Promise<StreamResult>;
  /** Reads retained history (`GET /api/v1/history`), oldest first. */
  history(topic: string, opts?: { limit?: number; before?: number }): Promise<HistoryPage>;
  /** Lists a topic's presence members (`GET /api/v1/presence`). */
  presence(topic: string): Promise<Member[]>;
}

/**
 * The helper for application servers (Node 20+, no dependency): publishes
 * through the gateway's HTTP API with the API key.
 *
 * @example
 * const sdk = createServerClient({ url: 'http://localhost:8080', apiKey: process.env.UPDRAFT_API_KEY })
 * await sdk.socket.emit('message', { text: 'hi' }, 'chat/engineering')
 */
export function createServerClient(options: ServerClientOptions): ServerClient {
  const base = options.url.replace(/\/+$/, '');
  const headers = { authorization: `Bearer ${options.apiKey}` };

  async function call<T>(method: string, path: string, body?: unknown, extra?: object): Promise<T> {
    const f = options.fetch ?? fetch;
    let res: Response;
    try {
      res = await f(base + path, {
        method,
        headers: body === undefined ? headers : { ...headers, 'content-type': body instanceof ReadableStream ? 'application/x-ndjson' : 'application/json' },
        body: body === undefined || body instanceof ReadableStream ? (body as ReadableStream | undefined) : JSON.stringify(body),
        ...extra,
      });
    } catch (e) {
      throw new UpdraftError('unavailable', `${method} ${path}: ${(e as Error).message}`);
    }
    const text = await res.text();
    let json: any;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    if (!res.ok) throw fromWire(json?.error, `${method} ${path}: HTTP ${res.status} ${text.slice(0, 200)}`, res.status);
    return json as T;
  }

  const q = (params: Record<string, string | number | undefined>) => {
    const s = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== undefined) s.set(k, String(v));
    return s.toString();
  };

  const emit = (m: EmitMessage) =>
    call<Position>('POST', '/api/v1/emit', { topic: m.topic, event: m.event, data: m.data, persist: m.persist || undefined, durable: m.durable || undefined });

  return {
    socket: { emit: (event, data, topic) => emit({ topic, event, data }) },
    emit,
    async emitBatch(messages) {
      const body = { messages: messages.map((m) => ({ topic: m.topic, event: m.event, data: m.data })) };
      const r = await call<{ results: any[] }>('POST', '/api/v1/emit/batch', body);
      return r.results.map((x) => (x.error ? fromWire(x.error, 'emit failed') : { epoch: x.epoch, seq: x.seq }));
    },
    async stream(topic, event, iterable, opts = {}) {
      const it = (Symbol.asyncIterator in iterable ? iterable[Symbol.asyncIterator]() : (iterable as Iterable<unknown>)[Symbol.iterator]()) as
        | AsyncIterator<unknown>
        | Iterator<unknown>;
      const enc = new TextEncoder();
      let failed: { e: unknown } | undefined;
      const body = new ReadableStream<Uint8Array>({
        async pull(ctrl) {
          for (;;) {
            let r: IteratorResult<unknown>;
            try {
              r = await it.next();
            } catch (e) {
              // The request is cut off, and watchers get event.error.
              failed = { e };
              throw e;
            }
            if (r.done) return ctrl.close();
            const line = JSON.stringify(r.value);
            if (line === undefined) continue;
            return ctrl.enqueue(enc.encode(line + '\n'));
          }
        },
        async cancel() {
          await it.return?.();
        },
      });
      let r: any;
      try {
        r = await call<any>('POST', `/api/v1/stream?${q({ topic, event, rollup: opts.rollup })}`, body, { duplex: 'half' });
      } catch (e) {
        throw failed ? failed.e : e;
      }
      return { firstSeq: r.first_seq, lastSeq: r.last_seq, count: r.count, epoch: r.epoch };
    },
    history: (topic, opts = {}) =>
      call<HistoryPage>('GET', `/api/v1/history?${q({ topic, limit: opts.limit, before: opts.before })}`).then((p) => ({
        epoch: p.epoch,
        messages: p.messages ?? [],
      })),
    presence: (topic) => call<{ members?: Member[] }>('GET', `/api/v1/presence?${q({ topic })}`).then((r) => r.members ?? []),
  };
}
