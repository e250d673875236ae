// wsfleet browser client: an ES module, no build step.
//
//   import { WsfleetClient } from "./wsfleet.js";
//   const client = new WsfleetClient({ url: "ws://127.0.0.1:8080/ws", user: "alice", token });
//   client.onmessage = (message) => console.log(message.seq, message.data);
//   client.start();
//   client.send("hello");
//
// Transports: WebSocket, then Server-Sent Events, then long polling, all in wsfleet
// protocol v1; the one that worked is tried first next time. Reconnects use full-jitter
// backoff and honour the server's hints (1012/1013 close reasons, Retry-After). Each
// reconnect resumes the session: the gateway replays what was missed, on any pod, or
// says "resync" when the gap left the replay window. Sent messages carry client sequence
// numbers; unacknowledged ones are sent again after a reconnect and never delivered twice.
//
// Channels (docs/channels.md): client.subscribe("chat:42", {onPublication}) keeps its
// position (epoch + offset) and recovers what it missed after a reconnect or a gap.

const PROTOCOL = "wsfleet.v1";
const HINT = /retry_after_ms=(\d+)/;
const FATAL_CLOSES = new Set([1008]);
// Channel frames go to the subscriptions, never to onmessage.
const CHANNEL_FRAMES = new Set(["pub", "subscribed", "unsubscribed", "join", "leave", "reply", "error"]);
const MAX_PENDING_REQUESTS = 1000; // publish and presence requests awaiting an answer
const RETRY_MS = [250, 5000]; // a subscribe the server could not serve yet: first, at most

export class Backoff {
  constructor({ baseMs = 200, capMs = 10000, maxElapsedMs = null, random = Math.random } = {}) {
    if (baseMs <= 0 || capMs < baseMs) throw new RangeError("backoff needs 0 < base <= cap");
    Object.assign(this, { baseMs, capMs, maxElapsedMs, random, attempt: 0, elapsedMs: 0 });
  }
  window() {
    return Math.min(this.capMs, this.baseMs * 2 ** Math.min(this.attempt, 62));
  }
  // Full jitter: uniform in [0, window]; a server hint is a floor plus half the jitter.
  nextDelay(hintMs = null) {
    const jitter = this.random() * this.window();
    const delay = hintMs == null ? jitter : hintMs + jitter / 2;
    if (this.maxElapsedMs != null && this.elapsedMs + delay > this.maxElapsedMs) return null;
    this.attempt += 1;
    this.elapsedMs += delay;
    return delay;
  }
  reset() {
    this.attempt = 0;
    this.elapsedMs = 0;
  }
}

function httpBase(url) {
  const parsed = new URL(url);
  parsed.protocol = parsed.protocol === "wss:" ? "https:" : parsed.protocol === "ws:" ? "http:" : parsed.protocol;
  return parsed;
}

function withPath(url, path, params) {
  const target = path === "/ws" ? new URL(url) : httpBase(url);
  target.pathname = path;
  target.search = new URLSearchParams(params).toString();
  return target.toString();
}

class Blocked extends Error {}

// Each transport: open(params) resolves to a link {send(frame), close(), pod} once the
// welcome arrived; frames are pushed to onframe; the end is reported once to onend(code, reason).
function openWebSocket(client, params, token, onframe, onend) {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(withPath(client.url, "/ws", params), [PROTOCOL, `bearer.${token}`]);
    let opened = false;
    let welcomed = false;
    const link = {
      pod: "",
      send: (frame) => socket.send(JSON.stringify(frame)),
      close: () => socket.close(1000),
    };
    socket.onopen = () => {
      opened = true;
      if (socket.protocol !== PROTOCOL) {
        socket.close();
        reject(new Blocked("server does not speak wsfleet.v1"));
      }
    };
    socket.onmessage = (event) => {
      const frame = JSON.parse(event.data);
      if (frame.type === "welcome" && !welcomed) {
        welcomed = true;
        link.pod = frame.pod || "";
        resolve(link);
      }
      onframe(frame, link);
    };
    socket.onclose = (event) => {
      if (!opened) reject(new Blocked(`websocket failed before opening (${event.code})`));
      else if (!welcomed) reject(new Error(`closed before welcome (${event.code})`));
      else onend(event.code, event.reason);
    };
  });
}

// Over SSE and long polling each message is its own POST: sent concurrently they may
// arrive out of order, and the gateway drops a client seq it has already passed. So a
// link posts one message after the other; a failed post does not hold up the next.
export function inOrder(post) {
  let last = Promise.resolve();
  return (frame) => {
    const sent = last.then(() => post(frame));
    last = sent.catch(() => {});
    return sent;
  };
}

function openSse(client, params, token, onframe, onend) {
  return new Promise((resolve, reject) => {
    const source = new EventSource(withPath(client.url, "/sse", { ...params, access_token: token }));
    let welcomed = false;
    let ended = false;
    let session = "";
    const end = (code, reason) => {
      if (ended) return;
      ended = true;
      source.close();
      if (welcomed) onend(code, reason);
      else reject(new Blocked(`event stream failed (${code})`));
    };
    const link = {
      pod: "",
      send: inOrder((frame) =>
        postFrame(
          () => withPath(client.url, "/sse/send", { ...params, access_token: token, session }),
          frame,
        ),
      ),
      close: () => end(1000, "closed by client"),
    };
    source.onmessage = (event) => {
      const frame = JSON.parse(event.data);
      if (frame.type === "welcome" && !welcomed) {
        welcomed = true;
        session = frame.session;
        link.pod = frame.pod || "";
        resolve(link);
      }
      client._alive();
      onframe(frame, link);
    };
    source.addEventListener("close", (event) => {
      const frame = JSON.parse(event.data);
      end(frame.code, frame.reason);
    });
    // EventSource would reconnect by itself, without our session: we take over.
    source.onerror = () => end(1006, "event stream lost");
  });
}

const SEND_ATTEMPTS = 5; // a POST refused with 429 is sent again at most this many times in all
const MAX_SEND_WAIT_MS = 5000; // the longest Retry-After a send waits

// POST one frame; a 429 (over the connection's rate: nothing of the POST was taken) is
// sent again after its Retry-After, a few times at most.
async function postFrame(url, frame) {
  const body = JSON.stringify(frame);
  for (let attempt = 1; ; attempt++) {
    const response = await fetch(url(), {
      method: "POST",
      body,
      headers: { "Content-Type": "text/plain" },
    });
    if (response.ok) return;
    if (response.status !== 429 || attempt >= SEND_ATTEMPTS) {
      throw new Error(`send refused: ${response.status}`);
    }
    const seconds = Number(response.headers.get("Retry-After"));
    const waitMs = Number.isFinite(seconds) && seconds > 0 ? seconds * 1000 : 1000;
    await new Promise((resolve) => setTimeout(resolve, Math.min(waitMs, MAX_SEND_WAIT_MS)));
  }
}

function openPoll(client, params, token, onframe, onend) {
  let session = "";
  let lastSeq = Number(params.last_seq || 0);
  let stopped = false;
  const query = (extra) => ({ ...params, access_token: token, ...extra });
  const link = {
    pod: "",
    send: inOrder((frame) =>
      postFrame(() => withPath(client.url, "/poll/send", query({ session })), frame),
    ),
    close: () => {
      stopped = true;
    },
  };
  const deliver = (body) => {
    client._alive();
    for (const frame of body.frames || []) {
      if (frame.seq) lastSeq = Math.max(lastSeq, frame.seq);
      if (frame.type === "close") {
        stopped = true;
        onend(frame.code, frame.reason);
        return;
      }
      onframe(frame, link);
    }
  };
  const loop = async () => {
    while (!stopped) {
      let response;
      try {
        response = await fetch(withPath(client.url, "/poll", query({ session, last_seq: lastSeq })));
      } catch (error) {
        stopped = true;
        onend(1006, "poll failed");
        return;
      }
      if (!response.ok) {
        stopped = true;
        onend(1006, `poll HTTP ${response.status}`);
        return;
      }
      deliver(await response.json());
    }
  };
  return fetch(withPath(client.url, "/poll", query({ wait: 0 }))).then(async (response) => {
    if (response.status === 401 || response.status === 403 || response.status === 429 || response.status === 503) {
      const error = new Error(`refused: ${response.status}`);
      error.status = response.status;
      error.retryAfterMs = Number(response.headers.get("Retry-After") || 0) * 1000 || null;
      throw error;
    }
    if (!response.ok) throw new Blocked(`long polling refused: ${response.status}`);
    const body = await response.json();
    session = body.session;
    const welcome = (body.frames || []).find((frame) => frame.type === "welcome");
    link.pod = (welcome && welcome.pod) || "";
    deliver(body);
    loop();
    return link;
  });
}

// Channels ------------------------------------------------------------------------

/** A refused channel request (an `error` frame's code and message), or one that could
 * not be answered: `disconnected`, `send_failed`, `too_many_requests` (too many awaiting). */
export class ChannelError extends Error {
  constructor(code, message = "") {
    super(message || code);
    this.name = "ChannelError";
    this.code = code;
  }
}

const HANDLERS = ["onPublication", "onSubscribed", "onUnsubscribed", "onJoin", "onLeave", "onError"];

function fromBase64(text) {
  return Uint8Array.from(atob(text), (char) => char.charCodeAt(0));
}

function toBase64(bytes) {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

// One channel as this client follows it: where it stands (epoch + last offset) and its
// handlers. Made by client.subscribe(), or by a server-side subscription (onsubscription).
export class Subscription {
  constructor(client, channel, server = false) {
    this.channel = channel;
    this.epoch = "";
    this.offset = 0; // the last offset received: a recovery asks for what came after it
    this.recoverable = false; // the channel has history (its publications have offsets)
    this.server = server; // the server subscribed this session (token subs, server API, backend)
    this.subscribed = false; // in the channel now (false while a (re)subscribe is under way)
    this.onPublication = null; // ({channel, offset, data, info}) => void
    this.onSubscribed = null; // ({recovered, missed}) => void: recovered false: reload state
    this.onUnsubscribed = null; // (reason: "client" | "server" | …) => void: tracking ended
    this.onJoin = null; // (info) => void
    this.onLeave = null; // (info) => void
    this.onError = null; // ({code, message}) => void: the subscribe was refused for good
    this._client = client;
    this._pendingId = 0; // the id of the subscribe awaiting its answer
    this._retries = 0; // subscribes retried since the last success (for the delay)
    this._timer = null; // a retry waiting
  }

  // Publish to the channel (the namespace must allow it, and this session be subscribed).
  // Resolves with the publication's {offset, epoch}; never resent after a disconnect.
  publish(data) {
    const bytes = ArrayBuffer.isView(data)
      ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
      : data instanceof ArrayBuffer
        ? new Uint8Array(data)
        : null;
    const body = bytes ? { data_b64: toBase64(bytes) } : { data: String(data) };
    return this._client._request("publish", this.channel, body);
  }

  // Who is subscribed: [{user, session, transport}] (namespace `presence`).
  presence() {
    return this._client._request("presence", this.channel).then((result) => (result && result.clients) || []);
  }

  unsubscribe() {
    this._client._unsubscribe(this);
  }
}

const OPENERS = { websocket: openWebSocket, sse: openSse, poll: openPoll };

export class WsfleetClient {
  constructor({
    url,
    user,
    token,
    transports = ["websocket", "sse", "poll"],
    backoff = new Backoff(),
    silenceTimeoutMs = 45000,
    remember = null, // a Storage (e.g. sessionStorage) to remember the transport that worked
  }) {
    Object.assign(this, { url, user, token, backoff, silenceTimeoutMs, remember });
    this.transports = [...transports];
    const known = remember && remember.getItem("wsfleet.transport");
    if (known && this.transports.includes(known)) {
      this.transports = [known, ...this.transports.filter((name) => name !== known)];
    }
    this.sessionId = "";
    this.lastSeq = 0;
    this.transport = "";
    this.pod = "";
    this.connected = false;
    this.stats = { attempts: 0, connects: 0, resumes: 0, resyncs: 0, transports: [], pods: [], closes: [] };
    this.onmessage = null; // (message: {seq, data}) => void
    this.onopen = null; // ({transport, pod, resumed}) => void
    this.onclose = null; // (code, reason) => void
    this.onresync = null; // () => void: the gap left the replay window
    this.onsubscription = null; // (sub: Subscription) => void: the server subscribed this session
    this.subscriptions = new Map(); // channel -> Subscription, client- and server-side
    this._requestId = 0; // channel requests' ids: one increasing counter
    this._requests = new Map(); // request id -> what awaits its answer (on the current link)
    this._cseq = 0;
    this._sent = [];
    this._unsent = [];
    this._link = null;
    this._stopped = false;
    this._watchdog = null;
    this._lastHeard = 0;
  }

  start() {
    this._connect();
    return this;
  }

  close() {
    this._stopped = true;
    clearInterval(this._watchdog);
    if (this._link) this._link.close();
    this._channelsLost();
  }

  send(data) {
    this._cseq += 1;
    const frame = { type: "message", cseq: this._cseq, data: String(data) };
    if (this._link && this.connected) {
      Promise.resolve(this._link.send(frame)).catch(() => this._unsent.push(frame));
      this._sent.push(frame);
    } else {
      this._unsent.push(frame);
    }
  }

  // A new token before the current one expires: the live session goes on with it (a
  // `refresh` frame; the gateway closes a session whose token expired with 4401), and
  // reconnects use it. Call it with a token for the same user.
  refreshToken(token) {
    this.token = token;
    if (this._link && this.connected) {
      Promise.resolve(this._link.send({ type: "refresh", token })).catch(() => {});
    }
  }

  // Follow a channel: returns its Subscription at once; the subscribe is sent now if
  // connected, else after the next welcome. The same channel again: the same Subscription
  // (the handlers given are set on it).
  subscribe(channel, handlers = {}) {
    if (typeof channel !== "string" || !channel) throw new TypeError("a channel is a non-empty string");
    const known = this.subscriptions.get(channel);
    const sub = known || new Subscription(this, channel);
    for (const name of HANDLERS) if (handlers[name]) sub[name] = handlers[name];
    if (!known) {
      this.subscriptions.set(channel, sub);
      this._sendSubscribe(sub);
    }
    return sub;
  }

  _nextId() {
    this._requestId += 1;
    return this._requestId;
  }

  _live() {
    return Boolean(this._link && this.connected);
  }

  // Send a request on the current link (the same path as messages: one POST at a time
  // over SSE and polling); `entry` awaits its answer under the frame's id.
  _send(frame, entry) {
    const link = this._link;
    this._requests.set(frame.id, entry);
    let sent;
    try {
      sent = Promise.resolve(link.send(frame));
    } catch (error) {
      sent = Promise.reject(error);
    }
    sent.catch((error) => {
      if (this._requests.get(frame.id) !== entry) return; // answered, or the link is gone
      this._requests.delete(frame.id);
      if (entry.reject) entry.reject(new ChannelError("send_failed", String((error && error.message) || error)));
      else if (entry.sub && entry.sub._pendingId === frame.id) {
        entry.sub._pendingId = 0;
        this._retryLater(entry.sub);
      }
    });
  }

  // A publish or presence request: answered by a `reply` or an `error`; not queued while
  // disconnected and not resent after a reconnect (a publication must not go out twice).
  _request(type, channel, body = {}) {
    return new Promise((resolve, reject) => {
      if (!this._live()) {
        reject(new ChannelError("disconnected", `not connected: ${type} is not queued`));
      } else if (this._requests.size >= MAX_PENDING_REQUESTS) {
        reject(new ChannelError("too_many_requests", `${MAX_PENDING_REQUESTS} requests await an answer`));
      } else {
        this._send({ type, id: this._nextId(), channel, ...body }, { kind: type, resolve, reject });
      }
    });
  }

  // (Re)subscribe: with the position to recover from when there is one. Until the answer
  // the channel's publications are dropped (the answer says where the next ones start).
  // leaveFirst: the gateway still holds the channel (a gap we saw): leave it, then join.
  _sendSubscribe(sub, leaveFirst = false) {
    clearTimeout(sub._timer);
    sub._timer = null;
    this._requests.delete(sub._pendingId);
    sub._pendingId = 0;
    sub.subscribed = false;
    if (!this._live()) return; // the next welcome subscribes it
    if (leaveFirst) {
      this._send({ type: "unsubscribe", id: this._nextId(), channel: sub.channel }, { kind: "unsubscribe" });
    }
    const frame = { type: "subscribe", id: this._nextId(), channel: sub.channel };
    if (sub.recoverable && sub.epoch) frame.since = { offset: sub.offset, epoch: sub.epoch };
    sub._pendingId = frame.id;
    this._send(frame, { kind: "subscribe", sub });
  }

  // Subscribe again a little later (the server could not serve it yet); the delay grows
  // with the retries, up to RETRY_MS[1]. A reconnect meanwhile subscribes at once instead.
  _retryLater(sub, leaveFirst = false) {
    sub.subscribed = false;
    clearTimeout(sub._timer);
    const delay = this._retryDelay(sub._retries);
    sub._retries += 1;
    sub._timer = setTimeout(() => {
      sub._timer = null;
      if (this.subscriptions.get(sub.channel) === sub && !sub._pendingId) this._sendSubscribe(sub, leaveFirst);
    }, delay);
  }

  _retryDelay(attempt) {
    const window = Math.min(RETRY_MS[1], RETRY_MS[0] * 2 ** Math.min(attempt, 8));
    return window / 2 + (Math.random() * window) / 2;
  }

  // Stop tracking a subscription (it is no longer resubscribed after a reconnect).
  _forget(sub) {
    clearTimeout(sub._timer);
    sub._timer = null;
    this._requests.delete(sub._pendingId);
    sub._pendingId = 0;
    sub.subscribed = false;
    if (this.subscriptions.get(sub.channel) === sub) this.subscriptions.delete(sub.channel);
  }

  _unsubscribe(sub) {
    if (this.subscriptions.get(sub.channel) !== sub) return; // already ended
    this._forget(sub);
    if (this._live()) {
      this._send({ type: "unsubscribe", id: this._nextId(), channel: sub.channel }, { kind: "unsubscribe" });
    }
    if (sub.onUnsubscribed) sub.onUnsubscribed("client");
  }

  // The link is gone (or replaced): requests awaiting an answer fail (publishes are not
  // resent), subscriptions wait for the next welcome to subscribe again.
  _channelsLost() {
    const waiting = [...this._requests.values()];
    this._requests.clear();
    for (const entry of waiting) {
      if (entry.reject) entry.reject(new ChannelError("disconnected", "the connection was lost before the answer"));
    }
    for (const sub of this.subscriptions.values()) {
      clearTimeout(sub._timer);
      sub._timer = null;
      sub._pendingId = 0;
      sub.subscribed = false;
    }
  }

  _channelFrame(frame) {
    const entry = frame.id ? this._requests.get(frame.id) : undefined;
    if (entry) this._requests.delete(frame.id);
    const sub = this.subscriptions.get(frame.channel);
    switch (frame.type) {
      case "subscribed":
        return this._subscribed(frame, entry);
      case "pub":
        return this._publication(sub, frame);
      case "unsubscribed":
        return this._unsubscribed(sub, frame, entry);
      case "join":
        if (sub && sub.onJoin) sub.onJoin(frame.info || {});
        return;
      case "leave":
        if (sub && sub.onLeave) sub.onLeave(frame.info || {});
        return;
      case "reply":
        if (entry && entry.resolve) entry.resolve(frame.result || {});
        return;
      case "error":
        return this._refused(frame, entry);
    }
  }

  _subscribed(frame, entry) {
    let sub;
    if (frame.id) {
      sub = entry && entry.sub;
      // an answer nobody waits for any more (unsubscribed, or subscribed again since)
      if (!sub || sub._pendingId !== frame.id || this.subscriptions.get(sub.channel) !== sub) return;
    } else {
      // the server subscribed this session: a channel of ours (our own subscribe then
      // meets already_subscribed, ignored), or a new one for the app
      sub = this.subscriptions.get(frame.channel);
      if (!sub) {
        sub = new Subscription(this, frame.channel, true);
        this.subscriptions.set(frame.channel, sub);
        if (this.onsubscription) this.onsubscription(sub); // the app sets handlers now
        if (this.subscriptions.get(frame.channel) !== sub) return; // it unsubscribed at once
      }
    }
    clearTimeout(sub._timer);
    sub._timer = null;
    this._requests.delete(sub._pendingId);
    sub._pendingId = 0;
    sub._retries = 0;
    sub.epoch = frame.epoch || "";
    sub.offset = frame.offset || 0; // the pubs that follow continue from offset + 1
    sub.recoverable = Boolean(frame.recoverable);
    sub.subscribed = true;
    if (sub.onSubscribed) sub.onSubscribed({ recovered: Boolean(frame.recovered), missed: frame.missed || 0 });
  }

  _publication(sub, frame) {
    if (!sub || !sub.subscribed) return; // not in the channel (yet): the subscribe recovers it
    const offset = frame.offset || 0;
    if (sub.recoverable) {
      if (offset <= sub.offset) return; // had it already
      if (offset > sub.offset + 1) {
        // publications were lost on the way (a lost poll answer, say): subscribe again
        // from where we are, and let the gateway send what we missed
        this._sendSubscribe(sub, true);
        return;
      }
    }
    sub.offset = offset;
    const data = frame.data_b64 != null ? fromBase64(frame.data_b64) : frame.data;
    if (sub.onPublication) sub.onPublication({ channel: sub.channel, offset, data, info: frame.info });
  }

  _unsubscribed(sub, frame, entry) {
    if (entry || !sub) return; // the answer to an unsubscribe of ours (reason "client")
    if (frame.reason === "insufficient_state") {
      // the gateway lost its place in the channel: subscribe again with our position
      // (unless a subscribe is already under way: its answer will do)
      if (!sub._pendingId) this._sendSubscribe(sub);
      return;
    }
    if (frame.reason === "client") return; // an earlier unsubscribe of ours
    this._forget(sub); // "server": the server API or the backend took it out
    if (sub.onUnsubscribed) sub.onUnsubscribed(frame.reason || "server");
  }

  _refused(frame, entry) {
    if (!entry) return; // not an answer to anything awaited
    if (entry.reject) {
      entry.reject(new ChannelError(frame.code, frame.message));
      return;
    }
    const sub = entry.sub;
    if (!sub || sub._pendingId !== frame.id || this.subscriptions.get(sub.channel) !== sub) return;
    sub._pendingId = 0;
    if (frame.code === "unavailable") {
      this._retryLater(sub); // the store cannot be reached now: try again shortly
    } else if (frame.code === "already_subscribed") {
      // the server is subscribing this session itself (its `subscribed` follows), or the
      // gateway kept the channel: if nothing comes, leave and subscribe again shortly
      this._retryLater(sub, true);
    } else {
      // permission_denied, unknown_namespace, bad_channel, too_many_subscriptions…: final
      this._forget(sub);
      if (sub.onError) sub.onError({ code: frame.code, message: frame.message || "" });
    }
  }

  // An async iterator of messages, for `for await (const message of client.messages())`.
  async *messages() {
    const queue = [];
    let wake = null;
    const previous = this.onmessage;
    this.onmessage = (message) => {
      if (previous) previous(message);
      queue.push(message);
      if (wake) wake();
    };
    while (!this._stopped) {
      if (!queue.length) await new Promise((resolve) => (wake = resolve));
      wake = null;
      while (queue.length) yield queue.shift();
    }
  }

  _alive() {
    this._lastHeard = Date.now();
  }

  async _connect() {
    while (!this._stopped) {
      this.stats.attempts += 1;
      const params = { user: this.user };
      if (this.sessionId) Object.assign(params, { session: this.sessionId, last_seq: this.lastSeq });
      let hintMs = null;
      let ended = null;
      const done = new Promise((resolve) => (ended = resolve));
      try {
        const [name, link] = await this._open(params, done, ended);
        this._link = link;
        const [code, reason] = await done;
        this._link = null;
        this.connected = false;
        clearInterval(this._watchdog);
        this._channelsLost();
        if (this._stopped) return;
        this.stats.closes.push([code, reason]);
        if (this.onclose) this.onclose(code, reason);
        if (FATAL_CLOSES.has(code)) return;
        const match = HINT.exec(reason || "");
        hintMs = match ? Number(match[1]) : null;
        if (Date.now() - this._openedAt > 5000) this.backoff.reset();
        void name;
      } catch (error) {
        hintMs = error.retryAfterMs || null;
      }
      const delay = this.backoff.nextDelay(hintMs);
      if (delay == null) return;
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }

  async _open(params, done, ended) {
    const blocked = [];
    for (const name of [...this.transports]) {
      try {
        const link = await OPENERS[name](
          this,
          params,
          this.token,
          (frame, from) => this._frame(name, from, frame),
          (code, reason) => ended([code, reason]),
        );
        this._remember(name);
        this._openedAt = Date.now();
        this._startWatchdog(link, ended);
        return [name, link];
      } catch (error) {
        if (!(error instanceof Blocked)) throw error;
        blocked.push(`${name}: ${error.message}`);
      }
    }
    throw new Error(`no transport got through: ${blocked.join("; ")}`);
  }

  _remember(name) {
    if (this.transports[0] !== name) {
      this.transports = [name, ...this.transports.filter((other) => other !== name)];
    }
    if (this.remember) this.remember.setItem("wsfleet.transport", name);
  }

  _startWatchdog(link, ended) {
    this._alive();
    clearInterval(this._watchdog);
    this._watchdog = setInterval(() => {
      const quiet = Date.now() - this._lastHeard;
      if (quiet > this.silenceTimeoutMs) {
        clearInterval(this._watchdog);
        link.close();
        ended([1006, "silent server"]);
      } else if (quiet > this.silenceTimeoutMs / 3 && this.transport === "websocket") {
        Promise.resolve(link.send({ type: "ping" })).catch(() => {});
      }
    }, Math.max(250, this.silenceTimeoutMs / 6));
  }

  _frame(name, link, frame) {
    this._alive();
    if (frame.type === "welcome") {
      const resumed = Boolean(frame.resumed);
      if (resumed) this.stats.resumes += 1;
      if (frame.resync) {
        this.stats.resyncs += 1;
        this.lastSeq = frame.seq || 0;
        if (this.onresync) this.onresync();
      }
      this.sessionId = frame.session;
      this.transport = name;
      this.pod = frame.pod || "";
      this._channelsLost(); // a new link: nothing asked on an earlier one will be answered
      this._link = link; // channel frames are taken from this link only
      const delivered = frame.cseq || 0;
      const again = resumed ? this._sent.filter((sent) => sent.cseq > delivered) : [];
      const pending = [...again, ...this._unsent];
      this._sent = [];
      this._unsent = [];
      this.connected = true;
      for (const item of pending) {
        Promise.resolve(link.send(item)).catch(() => {});
        this._sent.push(item);
      }
      // every channel we follow, again: with its position, so what was missed is recovered
      for (const sub of [...this.subscriptions.values()]) this._sendSubscribe(sub);
      this.stats.connects += 1;
      this.stats.transports.push(name);
      this.stats.pods.push(this.pod);
      if (this.onopen) this.onopen({ transport: name, pod: this.pod, resumed });
      return;
    }
    if (CHANNEL_FRAMES.has(frame.type)) {
      if (link === this._link) this._channelFrame(frame); // not from a link already replaced
      return;
    }
    if (frame.type === "message") {
      if (frame.seq && frame.seq <= this.lastSeq) return; // already had it
      if (frame.seq) this.lastSeq = frame.seq;
      if (this._sent.length > 1000) this._sent.splice(0, this._sent.length - 1000);
      const data = frame.data_b64 != null ? atob(frame.data_b64) : frame.data;
      if (this.onmessage) this.onmessage({ seq: frame.seq, data });
    }
  }
}
