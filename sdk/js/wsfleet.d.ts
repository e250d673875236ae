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
  start(): this;
  close(): void;
  send(data: unknown): void;
  /** Go on with a newer token: sent to the live session (a refresh frame), used to reconnect. */
  refreshToken(token: string): void;
  messages(): AsyncGenerator<Message, void, void>;
}
