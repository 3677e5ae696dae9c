/** A position on a topic: the epoch names the topic's history, seq counts within it. */
export interface Position {
  epoch: string;
  seq: number;
}

/** The server's answer to a subscribe. `recovered` says a `since` or `rewind` was honoured. */
export interface SubscribeResult extends Position {
  recovered: boolean;
}

/** Payload of an application event (any event other than INSERT/UPDATE/DELETE). */
export interface MessagePayload<T = any> {
  event: string;
  topic: string;
  data: T;
  /** The publisher's token `sub` (or session of an anonymous client); absent for HTTP emits. */
  from?: string;
  epoch: string;
  seq: number;
  /** Publish time, Unix milliseconds. */
  ts: number;
}

/** Payload of a table change: INSERT, UPDATE or DELETE. */
export interface ChangePayload<T = any> {
  event: 'INSERT' | 'UPDATE' | 'DELETE';
  topic: string;
  /** The row after the change (for DELETE, the row as it was). */
  data: T;
  /** The row before the change (UPDATE, DELETE). */
  old?: T;
  /** True when the row was too large: data holds only the primary key. */
  truncated: boolean;
  epoch: string;
  seq: number;
  ts: number;
}

/** One presence member: a connection on a topic. */
export interface Member<S = any> {
  /** The token's `sub`. */
  key: string;
  /** The connection's session id. */
  conn: string;
  state?: S;
  /** When it first tracked, Unix milliseconds. */
  joined: number;
}

/** What a `presence` handler receives. `members` is the live list after the change. */
export interface PresencePayload<S = any> {
  event: 'join' | 'update' | 'leave';
  member: Member<S>;
  members: Member<S>[];
}

/** A message of a topic's history. */
export interface HistoryMessage<T = any> {
  event: string;
  data: T;
  from?: string;
  seq: number;
  ts: number;
}

/** A page of history, oldest first. */
export interface HistoryPage<T = any> {
  epoch: string;
  messages: HistoryMessage<T>[];
}
