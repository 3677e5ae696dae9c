// An AI answer viewer on ai/<name>: tokens streamed by
// `updraft emit --stream ai/<name> token` (POST /api/v1/stream) render as
// they arrive; a page opened late replays the answer so far (rewind) and
// then continues live, so every watcher sees it whole.
import { useEffect, useRef, useState } from 'react';
import type { RealtimeChannel } from '@updraft/client';
import type { MessagePayload } from '@updraft/client';
import { useChannel, useTick } from '../realtime';
import { CodeBlock } from './CodeBlock';
import { Icon } from './Icon';

interface Answer {
  first: number;
  text: string;
  tokens: number;
  started: number;
  ended: number | null;
  error: string | null;
}

const REWIND = 1000;

function textOf(data: unknown): string {
  if (typeof data === 'string') return data;
  if (Array.isArray(data)) return data.map(textOf).join(''); // a rollup window
  if (data && typeof data === 'object' && typeof (data as { text?: unknown }).text === 'string') return (data as { text: string }).text;
  return data === undefined || data === null ? '' : JSON.stringify(data);
}

function command(topic: string): string {
  const url = location.host === '127.0.0.1:8080' ? '' : `--url ${location.protocol}//${location.host} `;
  return `for w in Updraft streams every token to every watcher, and a late joiner still sees the whole answer.; do
  printf '"%s "\\n' "$w"; sleep 0.2
done | bin/updraft emit ${url}--api-key dev-key --stream ${topic} token`;
}

export function Answers({ name }: { name: string }) {
  return <Viewer key={name} topic={`ai/${name}`} />;
}

function Viewer({ topic }: { topic: string }) {
  const [answers, setAnswers] = useState<Answer[]>([]);
  const now = useTick(1000);
  const [channel, state] = useChannel(topic, { rewind: REWIND }, {
    token: (p: MessagePayload) =>
      setAnswers((prev) => {
        const cur = prev[prev.length - 1];
        if (!cur || cur.ended !== null) return [...prev, { first: p.seq, text: textOf(p.data), tokens: 1, started: p.ts, ended: null, error: null }];
        return [...prev.slice(0, -1), { ...cur, text: cur.text + textOf(p.data), tokens: cur.tokens + 1 }];
      }),
    'token.end': (p: MessagePayload) =>
      setAnswers((prev) => {
        const cur = prev[prev.length - 1];
        if (!cur || cur.ended !== null) return [...prev, { first: p.seq, text: '', tokens: 0, started: p.ts, ended: p.ts, error: null }];
        return [...prev.slice(0, -1), { ...cur, ended: p.ts }];
      }),
    'token.error': (p: MessagePayload<{ message?: string }>) =>
      setAnswers((prev) => {
        const cur = prev[prev.length - 1];
        const error = p.data?.message ?? 'the stream failed';
        if (!cur || cur.ended !== null) return prev;
        return [...prev.slice(0, -1), { ...cur, ended: p.ts, error }];
      }),
  });
  const latest = answers[answers.length - 1];
  const earlier = answers.slice(0, -1).reverse();
  const streaming = latest !== undefined && latest.ended === null;
  const end = useRef<HTMLDivElement>(null);
  useEffect(() => {
    end.current?.scrollIntoView({ block: 'nearest' }); // returns a promise in newer browsers: not a cleanup
  }, [latest?.text]);

  return (
    <div className="page">
      <div className="page-head">
        <div>
          <h1>AI answers</h1>
          <p className="lede">
            Tokens streamed into <code>{topic}</code> render here one by one. Open this page halfway through an answer: it replays what was
            said so far, then continues live.
          </p>
        </div>
      </div>
      <div className="answers">
        <section className="card answer-card">
          <div className="card-head">
            <h2>
              <span className="spark">
                <Icon name="sparkle" size={18} />
              </span>
              Assistant
            </h2>
            {latest && (
              <span className={`answer-state ${streaming ? 'streaming' : latest.error ? 'failed' : 'done'}`} data-testid="answer-state">
                {streaming ? 'streaming…' : latest.error ? 'failed' : 'complete'}
              </span>
            )}
          </div>
          {state.phase === 'error' && <div className="alert">Could not subscribe to {topic}: {state.error.message}</div>}
          {!latest ? (
            <div className="empty">
              <div className="empty-icon">
                <Icon name="sparkle" size={28} />
              </div>
              <p>Waiting for an answer on {topic}. Run the command below in a terminal.</p>
            </div>
          ) : (
            <div className="answer" data-testid="answer">
              <p className="answer-text" data-testid="answer-text">
                {latest.text}
                {streaming && <span className="caret" />}
              </p>
              <div className="answer-meta muted" ref={end}>
                {latest.tokens} token{latest.tokens === 1 ? '' : 's'}
                {latest.ended !== null
                  ? ` in ${((latest.ended - latest.started) / 1000).toFixed(1)} s`
                  : ` · ${Math.max(0, Math.round((now - latest.started) / 1000))} s`}
                {latest.error && <span className="error-text"> · {latest.error}</span>}
              </div>
            </div>
          )}
          {earlier.length > 0 && (
            <div className="earlier">
              <h3 className="side-title">Earlier answers</h3>
              {earlier.slice(0, 5).map((a) => (
                <p key={a.first} className="earlier-text">
                  {a.text || <span className="muted">(empty)</span>}
                </p>
              ))}
            </div>
          )}
        </section>
        <section className="card how">
          <div className="card-head">
            <h2>Stream one yourself</h2>
          </div>
          <p>Each line on standard input is one JSON value, published the moment it is read:</p>
          <CodeBlock code={command(topic)} />
          <p>
            No terminal at hand? <SampleButton channel={channel} disabled={streaming} /> publishes a sample answer from this page, token by
            token, as a model would.
          </p>
          <p className="muted">
            From a Node server, <code>createServerClient(...).stream('{topic}', 'token', tokens())</code> does the same with your model's output.
            Watchers subscribe with <code>rewind</code> so that late joiners see the whole answer.
          </p>
        </section>
      </div>
    </div>
  );
}

const SAMPLE =
  'Updraft keeps one WebSocket per browser tab. Tokens published to a topic reach every subscriber in order, and because the topic keeps its recent history, a viewer who arrives halfway through replays what was already said and then continues live.';

/** Publishes SAMPLE a word at a time from this page (anonymous access lets a page publish). */
function SampleButton({ channel, disabled }: { channel: RealtimeChannel | null; disabled: boolean }) {
  const [playing, setPlaying] = useState(false);
  const play = async () => {
    if (!channel) return;
    setPlaying(true);
    try {
      const words = SAMPLE.split(' ');
      for (let i = 0; i < words.length; i++) {
        await channel.publish('token', i ? ` ${words[i]}` : words[i]);
        await new Promise((r) => setTimeout(r, 70));
      }
      await channel.publish('token.end', { count: words.length });
    } catch {
      // the connection dropped: the answer stays unfinished, as a broken stream would
    } finally {
      setPlaying(false);
    }
  };
  return (
    <button type="button" className="inline-button" onClick={play} disabled={!channel || playing || disabled}>
      {playing ? 'Streaming…' : 'Play a sample answer'}
    </button>
  );
}
