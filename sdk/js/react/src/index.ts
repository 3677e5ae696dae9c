export { RealtimeProvider, useRealtime } from './provider.js';
export type { RealtimeProviderProps, UseRealtimeResult } from './provider.js';
export { useChannel, usePresence, useHistory } from './hooks.js';
export type {
  ChannelHandlers,
  UseChannelOptions,
  UseChannelResult,
  UsePresenceResult,
  UseHistoryOptions,
  UseHistoryResult,
} from './hooks.js';
export type { SubscriptionState } from './registry.js';
