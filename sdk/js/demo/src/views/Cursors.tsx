// A live cursor board on cursors/<board>: each pointer's position is
// published (at most every 40 ms) and drawn on every other page; presence
// says who is on the board and removes a cursor when its page leaves.
import { useEffect, useRef, useState } from 'react';
import type { MessagePayload } from '@updraft/client';
import { initials, me, realtime, useChannel, usePresence } from '../realtime';

interface Move {
  id: string;
  name: string;
  color: string;
  x: number;
  y: number;
  out?: boolean;
}
interface Cursor extends Move {
  at: number;
}

const EVERY_MS = 40;

export function Cursors({ board }: { board: string }) {
  return <Board key={board} board={board} />;
}

function Board({ board }: { board: string }) {
  const topic = `cursors/${board}`;
  const [cursors, setCursors] = useState<Map<string, Cursor>>(() => new Map());
  const area = useRef<HTMLDivElement>(null);
  const pending = useRef<Move | null>(null);
  const lastSent = useRef(0);
  const timer = useRef<ReturnType<typeof setTimeout> | null>(null);
  const [sent, setSent] = useState(0);

  const [channel, state] = useChannel(topic, { presence: true }, {
    move: (p: MessagePayload<Move>) => {
      const d = p.data;
      if (!d || typeof d.id !== 'string' || d.id === realtime.session) return;
      setCursors((prev) => {
        const next = new Map(prev);
        if (d.out) next.delete(d.id);
        else next.set(d.id, { ...d, at: Date.now() });
        return next;
      });
    },
  });
  const members = usePresence(channel, { name: me.name, color: me.color });

  // A cursor whose page left the board goes with it.
  useEffect(() => {
    const here = new Set(members.map((m) => m.conn));
    setCursors((prev) => {
      const gone = [...prev.keys()].filter((id) => !here.has(id));
      if (!gone.length) return prev;
      const next = new Map(prev);
      gone.forEach((id) => next.delete(id));
      return next;
    });
  }, [members]);

  useEffect(
    () => () => {
      if (timer.current) clearTimeout(timer.current);
    },
    [],
  );

  const flush = () => {
    timer.current = null;
    const m = pending.current;
    if (!m || !channel) return;
    pending.current = null;
    lastSent.current = Date.now();
    setSent((n) => n + 1);
    channel.publish('move', m).catch(() => {});
  };
  const queue = (m: Move) => {
    pending.current = m;
    const wait = lastSent.current + EVERY_MS - Date.now();
    if (wait <= 0) flush();
    else timer.current ??= setTimeout(flush, wait);
  };
  const move = (e: { clientX: number; clientY: number }) => {
    const r = area.current?.getBoundingClientRect();
    if (!r) return;
    const x = Math.min(1, Math.max(0, (e.clientX - r.left) / r.width));
    const y = Math.min(1, Math.max(0, (e.clientY - r.top) / r.height));
    queue({ id: realtime.session, name: me.name, color: me.color, x, y });
  };

  const others = members.filter((m) => m.conn !== realtime.session);
  return (
    <div className="page">
      <div className="page-head">
        <div>
          <h1>Cursor board</h1>
          <p className="lede">
            Move your pointer over the board. Everyone on <code>{topic}</code> sees it, throttled to one update every {EVERY_MS} ms. Open this page
            in another window to see yours.
          </p>
        </div>
        <div className="facepile" data-testid="board-members">
          {members.map((m) => (
            <span key={m.conn} className="avatar" title={m.state?.name} style={{ background: m.state?.color ?? '#94a3b8' }}>
              {initials(m.state?.name ?? '?')}
            </span>
          ))}
          <span className="muted">{members.length === 1 ? 'just you' : `${members.length} here`}</span>
        </div>
      </div>
      {state.phase === 'error' && <div className="alert">Could not join {topic}: {state.error.message}</div>}
      <div
        className="board card"
        ref={area}
        data-testid="board"
        onPointerMove={move}
        onPointerLeave={() => queue({ id: realtime.session, name: me.name, color: me.color, x: 0, y: 0, out: true })}
      >
        <div className="board-grid" />
        {others.length === 0 && (
          <div className="board-hint">
            <p>You are the only one here.</p>
            <p className="muted">Open this board in a second window and move the pointer there.</p>
          </div>
        )}
        {[...cursors.values()].map((c) => (
          <div key={c.id} className="cursor" data-cursor={c.name} style={{ left: `${c.x * 100}%`, top: `${c.y * 100}%` }}>
            <svg width="26" height="26" viewBox="0 0 24 24" aria-hidden="true">
              <path d="M4 3l15 8-6.5 1.8L10 20z" fill={c.color} stroke="white" strokeWidth="1.5" strokeLinejoin="round" />
            </svg>
            <span className="cursor-label" style={{ background: c.color }}>
              {c.name}
            </span>
          </div>
        ))}
      </div>
      <p className="footnote muted">
        {sent} position update{sent === 1 ? '' : 's'} sent from this tab · {cursors.size} remote cursor{cursors.size === 1 ? '' : 's'} live
      </p>
    </div>
  );
}
