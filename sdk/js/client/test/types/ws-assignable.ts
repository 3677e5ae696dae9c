// Compile-time check: ws's WebSocket class is accepted as the WebSocket option without a cast.
import WebSocket from 'ws';
import { RealtimeClient } from '../../src/index.js';
export const rt = new RealtimeClient({ url: 'ws://127.0.0.1:1/api/realtime', WebSocket });
