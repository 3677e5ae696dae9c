// A chat room on chat/<room>: the last 50 messages on entry (rewind), older
// ones on demand (getHistory), who is here (presence) and who is typing
// (the presence state {typing: true}).
import { useEffect, useLayoutEffect, useRef, useState } from 'react';
import type { HistoryMessage, MessagePayload } from '@updraft/client';
import { initials, me, realtime, useChannel, usePresence, useTick } from '../realtime';
import { link } from '../router';
import { Icon } from './Icon';

interface ChatData {
  text: string;
  author: string;
  color?: string;
}
interface Msg {
  seq: number;
  data: ChatData;
  from: string | undefined;
  ts: number;
}
interface PresenceState {
  name: string;
  color: string;
  typing: boolean;
}

const rooms = ['general', 'engineering', 'random'];
const PAGE = 50;

function isChat(d: unknown): d is ChatData {
  return typeof d === 'object' && d !== null && typeof (d as ChatData).text === 'string';
}

function toMsg(m: MessagePayload | HistoryMessage): Msg | null {
  if (!isChat(m.data)) return null;
  // Messages emitted over HTTP (sdk.socket.emit, updraft emit) have no sender: the server's.
  const author = typeof m.data.author === 'string' ? m.data.author : m.from === undefined ? 'Server' : 'Anonymous';
  return { seq: m.seq, data: { ...m.data, author }, from: m.from, ts: m.ts };
}

function merge(prev: Msg[], more: Msg[]): Msg[] {
  const bySeq = new Map(prev.map((m) => [m.seq, m]));
  for (const m of more) bySeq.set(m.seq, m);
  return [...bySeq.values()].sort((a, b) => a.seq - b.seq);
}

const time = (ts: number) => new Date(ts).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });

export function Chat({ room }: { room: string }) {
  return <Room key={room} room={room} />;
}

function Room({ room }: { room: string }) {
  const topic = `chat/${room}`;
  const [messages, setMessages] = useState<Msg[]>([]);
  const [draft, setDraft] = useState('');
  const [typing, setTyping] = useState(false);
  const [older, setOlder] = useState<'idle' | 'loading' | 'done'>('idle');
  const [sendError, setSendError] = useState('');
  const list = useRef<HTMLDivElement>(null);
  const stick = useRef(true);
  const keepFrom = useRef<number | null>(null);
  useTick(30_000);

  const [channel, state] = useChannel(topic, { presence: true, rewind: PAGE }, {
    message: (p: MessagePayload) => {
      const m = toMsg(p);
      if (m) setMessages((prev) => merge(prev, [m]));
    },
  });
  const members = usePresence<PresenceState>(channel, { name: me.name, color: me.color, typing });

  // Typing: on while keys are pressed, off after 2.5 s of quiet or on send.
  useEffect(() => {
    if (!typing) return;
    const t = setTimeout(() => setTyping(false), 2500);
    return () => clearTimeout(t);
  }, [typing, draft]);

  // Stay at the bottom for new messages unless the reader scrolled up;
  // keep the reader's place when older messages are put above.
  useLayoutEffect(() => {
    const el = list.current;
    if (!el) return;
    if (keepFrom.current !== null) {
      el.scrollTop = el.scrollHeight - keepFrom.current;
      keepFrom.current = null;
    } else if (stick.current) el.scrollTop = el.scrollHeight;
  }, [messages]);

  const loadOlder = async () => {
    if (!channel || !messages.length) return;
    setOlder('loading');
    try {
      const page = await channel.getHistory({ limit: PAGE, before: messages[0]!.seq });
      const more = page.messages.map(toMsg).filter((m): m is Msg => m !== null);
      keepFrom.current = list.current ? list.current.scrollHeight - list.current.scrollTop : null;
      setMessages((prev) => merge(prev, more));
      setOlder(page.messages.length < PAGE || page.messages[0]?.seq === 1 ? 'done' : 'idle');
    } catch {
      setOlder('idle');
    }
  };

  const send = async (e: { preventDefault(): void }) => {
    e.preventDefault();
    const text = draft.trim();
    if (!text || !channel) return;
    setDraft('');
    setTyping(false);
    stick.current = true;
    try {
      setSendError('');
      await channel.publish('message', { text, author: me.name, color: me.color });
    } catch (err) {
      setSendError(`Not sent: ${(err as Error).message}`);
      setDraft(text);
    }
  };

  const self = realtime.session;
  const typers = members.filter((m) => m.state?.typing && m.conn !== self).map((m) => m.state!.name);
  const canLoadOlder = older !== 'done' && messages.length > 0 && messages[0]!.seq > 1;

  return (
    <div className="chat">
      <aside className="chat-side card">
        <h3 className="side-title">Rooms</h3>
        <ul className="rooms">
          {rooms.map((r) => (
            <li key={r}>
              <a className={r === room ? 'room active' : 'room'} {...link(`/chat/${r}`)}>
                <span className="hash">#</span>
                {r}
              </a>
            </li>
          ))}
        </ul>
        <h3 className="side-title">
          Here now <span className="count" data-testid="member-count">{members.length}</span>
        </h3>
        <ul className="members" data-testid="members">
          {members.map((m) => (
            <li key={m.conn} className="member" data-member={m.state?.name ?? m.key}>
              <span className="avatar small" style={{ background: m.state?.color ?? '#94a3b8' }}>
                {initials(m.state?.name ?? '?')}
              </span>
              <span className="member-name">
                {m.state?.name ?? 'Anonymous'}
                {m.conn === self && <span className="you"> (you)</span>}
              </span>
              {m.state?.typing && <span className="typing-dots" aria-label="typing" />}
            </li>
          ))}
        </ul>
      </aside>
      <section className="chat-main card">
        <div className="card-head">
          <h2>
            <span className="hash">#</span>
            {room}
          </h2>
          <span className="muted">{topic}</span>
        </div>
        <div
          className="messages"
          ref={list}
          data-testid="messages"
          onScroll={(e) => {
            const el = e.currentTarget;
            stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < 40;
          }}
        >
          {canLoadOlder && (
            <button type="button" className="older" onClick={loadOlder} disabled={older === 'loading'}>
              {older === 'loading' ? 'Loading…' : 'Load earlier messages'}
            </button>
          )}
          {state.phase === 'error' && <div className="alert">Could not join {topic}: {state.error.message}</div>}
          {messages.length === 0 && state.phase !== 'error' && (
            <div className="empty-chat">
              <div className="empty-icon">
                <Icon name="chat" size={28} />
              </div>
              <p>No messages in #{room} yet. Say hello — everyone here sees it instantly.</p>
            </div>
          )}
          {messages.map((m, i) => {
            const prev = messages[i - 1];
            const grouped = prev && prev.data.author === m.data.author && m.ts - prev.ts < 120_000;
            const mine = m.from !== undefined && m.from === self;
            return (
              <div key={m.seq} className={`msg${grouped ? ' grouped' : ''}${mine ? ' mine' : ''}`} data-seq={m.seq}>
                {!grouped && (
                  <span className="avatar" style={{ background: m.data.color ?? '#94a3b8' }}>
                    {initials(m.data.author)}
                  </span>
                )}
                <div className="msg-body">
                  {!grouped && (
                    <div className="msg-meta">
                      <strong>{m.data.author}</strong>
                      <span className="muted">{time(m.ts)}</span>
                    </div>
                  )}
                  <div className="msg-text">{m.data.text}</div>
                </div>
              </div>
            );
          })}
        </div>
        <div className="typing" data-testid="typing" aria-live="polite">
          {typers.length > 0 && (
            <>
              <span className="typing-dots" />
              {typers.length === 1 ? `${typers[0]} is typing…` : typers.length === 2 ? `${typers[0]} and ${typers[1]} are typing…` : 'Several people are typing…'}
            </>
          )}
        </div>
        <form className="composer" onSubmit={send}>
          <input
            value={draft}
            data-testid="composer"
            placeholder={`Message #${room}`}
            maxLength={2000}
            onChange={(e) => {
              setDraft(e.target.value);
              setTyping(e.target.value.trim() !== '');
            }}
          />
          <button type="submit" className="primary" disabled={!draft.trim()}>
            Send
          </button>
        </form>
        {sendError && <div className="alert">{sendError}</div>}
      </section>
    </div>
  );
}
