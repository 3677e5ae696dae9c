import { useEffect, useState } from 'react';
import type { Status } from '@updraft/client';
import { Answers } from './views/Answers';
import { Chat } from './views/Chat';
import { Cursors } from './views/Cursors';
import { Orders } from './views/Orders';
import { initials, me, realtime, useStatus } from './realtime';
import { link, usePath } from './router';

const views = [
  { path: '/', match: (p: string) => p === '/' || p.startsWith('/orders'), label: 'Orders', icon: 'M4 5h16M4 12h16M4 19h10' },
  { path: '/chat/general', match: (p: string) => p.startsWith('/chat'), label: 'Chat', icon: 'M5 5h14v10H9l-4 4z' },
  { path: '/cursors/lobby', match: (p: string) => p.startsWith('/cursors'), label: 'Cursors', icon: 'M6 4l12 7-5 1.5L10 18z' },
  { path: '/answers/demo', match: (p: string) => p.startsWith('/answers'), label: 'AI answers', icon: 'M12 3l2.2 5.8L20 11l-5.8 2.2L12 19l-2.2-5.8L4 11l5.8-2.2z' },
];

const statusText: Record<Status, string> = {
  idle: 'Idle',
  connecting: 'Connecting…',
  connected: 'Connected',
  reconnecting: 'Reconnecting…',
  disconnected: 'Disconnected',
};

function StatusPill() {
  const status = useStatus();
  const node = status === 'connected' ? realtime.node : '';
  return (
    <div className={`status status-${status}`} data-testid="status" data-status={status} title={node ? `gateway node ${node}` : undefined}>
      <span className="status-dot" />
      <span>{statusText[status]}</span>
      {node && <span className="status-node">{node}</span>}
    </div>
  );
}

function segment(path: string, prefix: string, fallback: string): string {
  const rest = path.slice(prefix.length).replace(/^\/+|\/+$/g, '');
  return /^[A-Za-z0-9_-]{1,64}$/.test(rest) ? rest : fallback;
}

/** After a few seconds without a connection, says what usually causes it. */
function ConnectionHelp() {
  const status = useStatus();
  const [late, setLate] = useState(false);
  useEffect(() => {
    setLate(false);
    if (status === 'connected') return;
    const t = setTimeout(() => setLate(true), 4000);
    return () => clearTimeout(t);
  }, [status]);
  if (!late || status === 'connected') return null;
  const closed = realtime.lastClose;
  return (
    <div className="banner" role="status">
      <strong>Cannot reach the gateway at {location.host}.</strong> It must be running and allow this page's origin:{' '}
      <code>UPDRAFT_ALLOWED_ORIGINS={location.origin}</code> (<code>make run</code> allows <code>http://127.0.0.1:*</code> and{' '}
      <code>http://localhost:*</code>).
      {realtime.error ? ` ${realtime.error.message}.` : closed ? ` Last close: ${closed.code}${closed.reason ? ` ${closed.reason}` : ''}.` : ''}
      {status === 'disconnected' ? '' : ' Retrying…'}
    </div>
  );
}

export function App() {
  const path = usePath();
  let view;
  if (path.startsWith('/chat')) view = <Chat room={segment(path, '/chat', 'general')} />;
  else if (path.startsWith('/cursors')) view = <Cursors board={segment(path, '/cursors', 'lobby')} />;
  else if (path.startsWith('/answers')) view = <Answers name={segment(path, '/answers', 'demo')} />;
  else view = <Orders />;
  return (
    <div className="app">
      <header className="topbar">
        <a className="brand" {...link('/')}>
          <svg viewBox="0 0 32 32" width="28" height="28" aria-hidden="true">
            <rect width="32" height="32" rx="8" fill="#4f46e5" />
            <path d="M9 20l7-9 7 9" stroke="white" strokeWidth="3" fill="none" strokeLinecap="round" strokeLinejoin="round" />
          </svg>
          <span className="brand-name">Updraft</span>
          <span className="brand-tag">demo</span>
        </a>
        <nav className="tabs">
          {views.map((v) => (
            <a key={v.label} className={v.match(path) ? 'tab active' : 'tab'} {...link(v.path)}>
              <svg viewBox="0 0 24 24" width="16" height="16" aria-hidden="true">
                <path d={v.icon} fill="none" stroke="currentColor" strokeWidth="2" strokeLinejoin="round" strokeLinecap="round" />
              </svg>
              {v.label}
            </a>
          ))}
        </nav>
        <div className="topbar-right">
          <StatusPill />
          <div className="me" title="You, in this tab">
            <span className="avatar" style={{ background: me.color }}>
              {initials(me.name)}
            </span>
            <span className="me-name" data-testid="me">
              {me.name}
            </span>
          </div>
        </div>
      </header>
      <ConnectionHelp />
      <main className="content">{view}</main>
    </div>
  );
}
