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

const PROTOCOL = "wsfleet.v1";
const HINT = /retry_after_ms=(\d+)/;
const FATAL_CLOSES = new Set([1008]);

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
        fetch(withPath(client.url, "/sse/send", { ...params, access_token: token, session }), {
          method: "POST",
          body: JSON.stringify(frame),
          headers: { "Content-Type": "text/plain" },
        }).then((response) => {
          if (!response.ok) throw new Error(`send refused: ${response.status}`);
        }),
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

function openPoll(client, params, token, onframe, onend) {
  let session = "";
  let lastSeq = Number(params.last_seq || 0);
  let stopped = false;
  const query = (extra) => ({ ...params, access_token: token, ...extra });
  const link = {
    pod: "",
    send: inOrder((frame) =>
      fetch(withPath(client.url, "/poll/send", query({ session })), {
        method: "POST",
        body: JSON.stringify(frame),
        headers: { "Content-Type": "text/plain" },
      }).then((response) => {
        if (!response.ok) throw new Error(`send refused: ${response.status}`);
      }),
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
      this.stats.connects += 1;
      this.stats.transports.push(name);
      this.stats.pods.push(this.pod);
      if (this.onopen) this.onopen({ transport: name, pod: this.pod, resumed });
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
