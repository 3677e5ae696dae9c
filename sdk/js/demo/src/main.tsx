import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { App } from './App';
import { realtime } from './realtime';
import './styles.css';

// Connect at once, so the header shows the connection even on a page that
// subscribes to nothing; the client reconnects by itself from then on.
realtime.connect().catch(() => {});

createRoot(document.getElementById('root')!).render(
  <StrictMode>
    <App />
  </StrictMode>,
);
