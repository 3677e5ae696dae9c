// The live orders dashboard: the `orders` table topic, rebuilt from its
// recent changes (rewind) and kept live. Rows appear, change and leave as
// PostgreSQL commits them.
import { useRef, useState } from 'react';
import type { ChangePayload } from '@updraft/client';
import { ago, useChannel, useServerConfig, useTick, type ServerConfig } from '../realtime';
import { CodeBlock } from './CodeBlock';
import { Icon } from './Icon';

type Row = Record<string, unknown> & { id?: unknown };
interface Shown {
  row: Row;
  version: number;
  at: number;
  leaving: boolean;
  /** Changed while the page watched (highlighted), not replayed on load. */
  fresh: boolean;
}
interface Activity {
  seq: number;
  event: ChangePayload['event'];
  row: Row;
  ts: number;
}

const money = new Intl.NumberFormat(undefined, { style: 'currency', currency: 'USD' });

function rowKey(row: Row): string {
  return row.id !== undefined ? String(row.id) : JSON.stringify(row);
}

function cell(column: string, value: unknown) {
  if (value === null || value === undefined) return <span className="muted">—</span>;
  if (column === 'status') return <span className={`badge badge-${String(value).toLowerCase().replace(/[^a-z]/g, '')}`}>{String(value)}</span>;
  if ((column === 'total' || column === 'amount') && !Number.isNaN(Number(value))) return money.format(Number(value));
  if (column === 'customer_id') return `Customer #${String(value)}`;
  if (typeof value === 'object') return <code>{JSON.stringify(value)}</code>;
  return String(value);
}

const preferred = ['id', 'customer_id', 'status', 'total', 'amount'];
function columnsOf(rows: Shown[]): string[] {
  const seen = new Set<string>();
  for (const r of rows) Object.keys(r.row).forEach((k) => seen.add(k));
  return [...seen].sort((a, b) => {
    const ia = preferred.indexOf(a);
    const ib = preferred.indexOf(b);
    return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || a.localeCompare(b);
  });
}

function title(column: string): string {
  return column === 'customer_id' ? 'Customer' : column === 'id' ? 'Order' : column.replace(/_/g, ' ').replace(/^./, (c) => c.toUpperCase());
}

function SetupCard({ config }: { config: ServerConfig }) {
  return (
    <section className="card setup" data-testid="orders-setup">
      <div className="setup-icon">
        <Icon name="database" size={28} />
      </div>
      <h2>Connect a database to see live orders</h2>
      <p>
        This node runs {config.mode === 'embedded' ? 'without a database' : 'in a cluster'}, so no table is tracked. Start a throwaway PostgreSQL
        with a sample <code>orders</code> table, then run Updraft against it:
      </p>
      <CodeBlock
        code={`eval "$(make -s db)"    # make db: a PostgreSQL on 127.0.0.1:55432 with an orders table; sets DB
UPDRAFT_DATABASE_URL=$DB UPDRAFT_TRACK_TABLES=orders make run`}
      />
      <p>Then change a row and watch it arrive here:</p>
      <CodeBlock code={`psql "$DB" -c "INSERT INTO orders (customer_id, status, total) VALUES (42, 'paid', 129.90)"`} />
      {config.mode === 'cluster' && (
        <p className="muted">
          In a cluster, <code>updraft tracker</code> tracks tables beside the gateways: set <code>UPDRAFT_TRACK_TABLES=orders</code> on this gateway too
          and this page shows them.
        </p>
      )}
    </section>
  );
}

export function Orders() {
  const config = useServerConfig();
  const tracked = config ? config.tables.includes('orders') : false;
  return (
    <div className="page">
      <div className="page-head">
        <div>
          <h1>Live orders</h1>
          <p className="lede">
            Every <code>INSERT</code>, <code>UPDATE</code> and <code>DELETE</code> on the <code>orders</code> table, pushed to this page by the change
            tracker. No polling, no refresh.
          </p>
        </div>
      </div>
      {config === null ? null : tracked ? <Dashboard /> : <SetupCard config={config} />}
    </div>
  );
}

function Dashboard() {
  const [rows, setRows] = useState<Map<string, Shown>>(() => new Map());
  const [activity, setActivity] = useState<Activity[]>([]);
  const now = useTick(5000);
  const mounted = useRef(Date.now());

  const change = (p: ChangePayload<Row>) => {
    const key = rowKey(p.data);
    // Changes replayed on load (rewind) build the table without animation.
    const fresh = p.ts >= mounted.current - 1000;
    setRows((prev) => {
      const next = new Map(prev);
      const was = prev.get(key);
      if (p.event === 'DELETE') {
        if (was && fresh) next.set(key, { ...was, leaving: true });
        else next.delete(key);
      } else {
        next.set(key, { row: p.data, version: (was?.version ?? 0) + 1, at: p.ts, leaving: false, fresh });
      }
      return next;
    });
    if (p.event === 'DELETE' && fresh) {
      // The row fades out, then goes (unless it came back meanwhile).
      setTimeout(() => {
        setRows((cur) => {
          if (!cur.get(key)?.leaving) return cur;
          const next = new Map(cur);
          next.delete(key);
          return next;
        });
      }, 700);
    }
    setActivity((prev) => [{ seq: p.seq, event: p.event, row: p.data, ts: p.ts }, ...prev].slice(0, 12));
  };
  const [, state] = useChannel('orders', { rewind: 200 }, { INSERT: change, UPDATE: change, DELETE: change });

  const list = [...rows.values()].sort((a, b) => b.at - a.at);
  const live = list.filter((r) => !r.leaving);
  const revenue = live.reduce((s, r) => s + (Number(r.row.total ?? r.row.amount) || 0), 0);
  const columns = columnsOf(list);
  const last = activity[0];

  return (
    <>
      <div className="stats">
        <div className="stat card">
          <div className="stat-label">Orders on screen</div>
          <div className="stat-value" data-testid="orders-count">{live.length}</div>
        </div>
        <div className="stat card">
          <div className="stat-label">Total value</div>
          <div className="stat-value">{money.format(revenue)}</div>
        </div>
        <div className="stat card">
          <div className="stat-label">Last change</div>
          <div className="stat-value small">{last ? `${last.event} · ${ago(last.ts, now)}` : 'waiting…'}</div>
        </div>
      </div>
      {state.phase === 'error' && (
        <div className="alert" role="alert">
          Could not subscribe to <code>orders</code>: {state.error.message}
        </div>
      )}
      <div className="split">
        <section className="card table-card">
          <div className="card-head">
            <h2>Orders</h2>
            <span className="live-tag">
              <span className="pulse" /> live
            </span>
          </div>
          {list.length === 0 ? (
            <div className="empty">
              <p>No changes yet. Insert a row and it appears here at once:</p>
              <CodeBlock code={`psql "$DB" -c "INSERT INTO orders (customer_id, status, total) VALUES (42, 'paid', 129.90)"`} />
            </div>
          ) : (
            <table className="orders" data-testid="orders-table">
              <thead>
                <tr>
                  {columns.map((c) => (
                    <th key={c} className={c === 'total' || c === 'amount' ? 'num' : undefined}>
                      {title(c)}
                    </th>
                  ))}
                  <th className="num">Updated</th>
                </tr>
              </thead>
              <tbody>
                {list.map((r) => (
                  <tr key={`${rowKey(r.row)}-${r.version}`} data-order-id={rowKey(r.row)} className={r.leaving ? 'row leaving' : !r.fresh ? 'row' : r.version > 1 ? 'row updated' : 'row inserted'}>
                    {columns.map((c) => (
                      <td key={c} className={c === 'total' || c === 'amount' ? 'num' : undefined}>
                        {c === 'id' ? <strong>#{String(r.row[c])}</strong> : cell(c, r.row[c])}
                      </td>
                    ))}
                    <td className="num muted">{ago(r.at, now)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </section>
        <aside className="card feed">
          <div className="card-head">
            <h2>Activity</h2>
          </div>
          {activity.length === 0 ? (
            <p className="muted small-pad">Changes show up here as they happen.</p>
          ) : (
            <ul className="feed-list">
              {activity.map((a) => (
                <li key={a.seq} className="feed-item">
                  <span className={`op op-${a.event.toLowerCase()}`}>{a.event}</span>
                  <span className="feed-text">
                    Order <strong>#{rowKey(a.row)}</strong>
                    {a.row.status !== undefined && <> · {String(a.row.status)}</>}
                  </span>
                  <span className="feed-time">{ago(a.ts, now)}</span>
                </li>
              ))}
            </ul>
          )}
        </aside>
      </div>
    </>
  );
}
