// Types for wsfleet.js (the wsfleet browser client). Kept beside the module by hand;
// tests/unit/test_js_sdk.py checks that every export of wsfleet.js is declared here.

export interface BackoffOptions {
  baseMs?: number; // first reconnect window (default 200)
  capMs?: number; // largest window (default 10000)
  maxElapsedMs?: number | null; // give up after this much waiting in all (null: never)
  random?: () => number;
}

/** Reconnect delays: full jitter in a doubling window; a server hint is a floor. */
export class Backoff {
  constructor(options?: BackoffOptions);
  attempt: number;
  elapsedMs: number;
  window(): number;
  nextDelay(hintMs?: number | null): number | null;
  reset(): void;
}

/** Wraps an async send so that calls run one at a time, in the order they were made. */
export function inOrder<F>(post: (frame: F) => Promise<unknown>): (frame: F) => Promise<unknown>;

export type Transport = "websocket" | "sse" | "poll";

export interface Message {
  seq: number;
  data: string;
}

export interface ClientOptions {
  url: string; // ws://host/ws (SSE and polling use the same host)
  user: string;
  token: string;
  transports?: Transport[];
  backoff?: Backoff;
  silenceTimeoutMs?: number;
  remember?: Storage | null; // remembers the transport that worked
}

export interface ClientStats {
  attempts: number;
  connects: number;
  resumes: number;
  resyncs: number;
  transports: Transport[];
  pods: string[];
  closes: Array<[number, string]>;
}

/** A publication in a channel. */
export interface Publication {
  channel: string;
  offset: number; // 1, 2, 3… within the channel's epoch; 0 in a channel without history
  data: string | Uint8Array; // a Uint8Array when it was published as binary (data_b64)
  info?: { user?: string; [key: string]: unknown }; // who published it, when a client did
}

/** The answer to a (re)subscribe: recovered false means a gap could not be filled (reload state). */
export interface SubscribedInfo {
  recovered: boolean;
  missed: number; // publications recovered from the history (they follow at once)
}

/** A presence change (namespace join_leave). */
export interface PresenceInfo {
  user: string;
  session: string;
  [key: string]: unknown;
}

/** One subscriber of a channel, as presence() lists them. */
export interface PresenceClient {
  user: string;
  session: string;
  transport: Transport;
}

/** Why a channel request was refused: an `error` frame's code and message. */
export interface ChannelErrorInfo {
  code: ChannelErrorCode;
  message: string;
}

export type ChannelErrorCode =
  | "bad_request"
  | "bad_channel"
  | "unknown_namespace"
  | "permission_denied"
  | "too_many_subscriptions"
  | "already_subscribed"
  | "not_subscribed"
  | "too_big"
  | "too_many_requests"
  | "rejected"
  | "unavailable"
  // the client's own: not connected (or the link was lost before the answer), a POST refused
  | "disconnected"
  | "send_failed"
  | (string & {});

/** What publish() and presence() reject with. */
export class ChannelError extends Error implements ChannelErrorInfo {
  constructor(code: ChannelErrorCode, message?: string);
  code: ChannelErrorCode;
  message: string;
}

export type UnsubscribeReason = "client" | "server" | (string & {});

export interface SubscriptionHandlers {
  onPublication?: ((publication: Publication) => void) | null;
  onSubscribed?: ((info: SubscribedInfo) => void) | null;
  /** Tracking ended: "client" (unsubscribe()) or "server" (the server API or the backend). */
  onUnsubscribed?: ((reason: UnsubscribeReason) => void) | null;
  onJoin?: ((info: PresenceInfo) => void) | null;
  onLeave?: ((info: PresenceInfo) => void) | null;
  /** The subscribe was refused for good (permission_denied, unknown_namespace…): tracking ended. */
  onError?: ((error: ChannelErrorInfo) => void) | null;
}

/** One channel as the client follows it: its position (epoch, offset), recovered after
 * reconnects and gaps. Made by client.subscribe() or by a server-side subscription. */
export class Subscription implements SubscriptionHandlers {
  private constructor();
  readonly channel: string;
  epoch: string;
  /** The last offset received: a recovery asks for what came after it. */
  offset: number;
  recoverable: boolean;
  /** The server subscribed this session (token subs, server API, backend). */
  server: boolean;
  /** In the channel now (false while a (re)subscribe is under way). */
  subscribed: boolean;
  onPublication: ((publication: Publication) => void) | null;
  onSubscribed: ((info: SubscribedInfo) => void) | null;
  onUnsubscribed: ((reason: UnsubscribeReason) => void) | null;
  onJoin: ((info: PresenceInfo) => void) | null;
  onLeave: ((info: PresenceInfo) => void) | null;
  onError: ((error: ChannelErrorInfo) => void) | null;
  /** Rejects with a ChannelError (its code); never resent after a disconnect. */
  publish(data: string | ArrayBuffer | ArrayBufferView): Promise<{ offset: number; epoch: string }>;
  presence(): Promise<PresenceClient[]>;
  unsubscribe(): void;
}

/** One logical session: transports with fallback, resume, backoff, token refresh. */
export class WsfleetClient {
  constructor(options: ClientOptions);
  sessionId: string;
  lastSeq: number;
  transport: Transport | "";
  pod: string;
  connected: boolean;
  token: string;
  stats: ClientStats;
  onmessage: ((message: Message) => void) | null;
  onopen: ((info: { transport: Transport; pod: string; resumed: boolean }) => void) | null;
  onclose: ((code: number, reason: string) => void) | null;
  onresync: (() => void) | null;
  /** The server subscribed this session to a channel the app did not ask for. */
  onsubscription: ((subscription: Subscription) => void) | null;
  /** Every channel followed (client- and server-side), by name. */
  readonly subscriptions: Map<string, Subscription>;
  start(): this;
  close(): void;
  send(data: unknown): void;
  /** Go on with a newer token: sent to the live session (a refresh frame), used to reconnect. */
  refreshToken(token: string): void;
  messages(): AsyncGenerator<Message, void, void>;
  /** Follow a channel: sent now if connected, else after the next welcome; the same
   * channel again gives the same Subscription (the handlers given are set on it). */
  subscribe(channel: string, handlers?: SubscriptionHandlers): Subscription;
}
