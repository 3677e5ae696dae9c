export { RealtimeClient } from './realtime.js';
export type { Status, RealtimeClientOptions, WebSocketLike, WebSocketConstructor, Clock } from './realtime.js';
export { RealtimeChannel } from './channel.js';
export type { ChannelOptions, ChannelStatusEvent } from './channel.js';
export { UpdraftError } from './errors.js';
export type { ErrorCode } from './errors.js';
export { createServerClient } from './server.js';
export type { ServerClient, ServerClientOptions, EmitMessage, StreamResult } from './server.js';
export type {
  Position,
  SubscribeResult,
  MessagePayload,
  ChangePayload,
  Member,
  PresencePayload,
  HistoryMessage,
  HistoryPage,
} from './types.js';
