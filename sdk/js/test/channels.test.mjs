// node --test sdk/js/test : channels in the browser SDK (subscribe, positions, recovery,
// publish, presence, server-side subscriptions), driven through a fake WebSocket.
import { test, afterEach } from "node:test";
import assert from "node:assert/strict";
import { Backoff, ChannelError, Subscription, WsfleetClient } from "../wsfleet.js";

// A stand-in for the browser's WebSocket: the test opens it, hands it frames and drops it.
class FakeSocket {
  static all = [];
  constructor(url, protocols) {
    Object.assign(this, { url, protocols, protocol: "", sent: [], closed: false });
    FakeSocket.all.push(this);
  }
  send(text) {
    this.sent.push(JSON.parse(text));
  }
  close(code = 1000) {
    if (this.closed) return;
    this.closed = true;
    queueMicrotask(() => this.onclose && this.onclose({ code, reason: "" }));
  }
  // -- the test's side
  accept(welcome = {}) {
    this.protocol = "wsfleet.v1";
    this.onopen();
    this.receive({ type: "welcome", session: "s1", seq: 0, cseq: 0, resumed: false, pod: "pod-a", ...welcome });
  }
  receive(frame) {
    this.onmessage({ data: JSON.stringify(frame) });
  }
  drop(code = 1006) {
    this.closed = true;
    this.onclose({ code, reason: "lost" });
  }
  // the channel requests sent (not pings or messages), and forget them
  take() {
    const requests = this.sent.filter((frame) => frame.type !== "ping" && frame.type !== "message");
    this.sent = [];
    return requests;
  }
}
globalThis.WebSocket = FakeSocket;

const clients = [];
afterEach(() => {
  for (const client of clients.splice(0)) client.close();
  FakeSocket.all = [];
});

function newClient() {
  const client = new WsfleetClient({
    url: "ws://127.0.0.1:1/ws",
    user: "alice",
    token: "t",
    transports: ["websocket"],
    backoff: new Backoff({ baseMs: 1, capMs: 1, random: () => 0 }), // reconnect at once
  });
  client._retryDelay = () => 0; // retries at once too
  clients.push(client);
  return client;
}

// A started client with its first socket accepted.
function connected(client = newClient()) {
  client.start();
  const socket = FakeSocket.all.at(-1);
  socket.accept();
  return { client, socket };
}

const pause = (ms = 0) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(check, what) {
  for (let i = 0; i < 200; i++) {
    if (check()) return;
    await pause(1);
  }
  assert.fail(`timed out waiting for ${what}`);
}

// A recoverable channel at `offset` in epoch "e1", with its publications recorded.
function subscribedAt(client, socket, channel, offset) {
  const got = [];
  const sub = client.subscribe(channel, { onPublication: (pub) => got.push(pub.offset) });
  const [request] = socket.take();
  socket.receive({ type: "subscribed", id: request.id, channel, epoch: "e1", offset, recoverable: true, recovered: false, missed: 0 });
  return { sub, got };
}

const pub = (channel, offset, data = `m${offset}`) => ({ type: "pub", channel, offset, data });

test("a subscribe made before connecting is sent right after the welcome", () => {
  const client = newClient();
  const sub = client.subscribe("chat:1");
  assert.ok(sub instanceof Subscription);
  assert.equal(sub.subscribed, false);
  assert.equal(client.subscriptions.get("chat:1"), sub);
  client.start();
  const socket = FakeSocket.all[0];
  assert.deepEqual(socket.sent, []); // nothing before the welcome
  socket.accept();
  assert.deepEqual(socket.take(), [{ type: "subscribe", id: 1, channel: "chat:1" }]);
});

test("subscribing while connected sends at once, with one increasing id counter; twice is the same subscription", () => {
  const { client, socket } = connected();
  const a = client.subscribe("chat:1");
  const b = client.subscribe("chat:2");
  assert.equal(client.subscribe("chat:1"), a);
  assert.deepEqual(socket.take(), [
    { type: "subscribe", id: 1, channel: "chat:1" },
    { type: "subscribe", id: 2, channel: "chat:2" },
  ]);
  assert.notEqual(a, b);
});

test("subscribed sets the position and calls onSubscribed", () => {
  const { client, socket } = connected();
  const answers = [];
  const sub = client.subscribe("chat:1", { onSubscribed: (info) => answers.push(info) });
  const [request] = socket.take();
  socket.receive({ type: "subscribed", id: request.id, channel: "chat:1", epoch: "e1", offset: 17, recoverable: true, recovered: false, missed: 0 });
  assert.deepEqual(
    { epoch: sub.epoch, offset: sub.offset, recoverable: sub.recoverable, subscribed: sub.subscribed, server: sub.server },
    { epoch: "e1", offset: 17, recoverable: true, subscribed: true, server: false },
  );
  assert.deepEqual(answers, [{ recovered: false, missed: 0 }]);
});

test("contiguous publications are delivered, with text, binary data and info", () => {
  const { client, socket } = connected();
  const got = [];
  const sub = client.subscribe("chat:1", { onPublication: (p) => got.push(p) });
  socket.receive({ type: "subscribed", id: socket.take()[0].id, channel: "chat:1", epoch: "e1", offset: 0, recoverable: true });
  socket.receive({ type: "pub", channel: "chat:1", offset: 1, data: "hi", info: { user: "bob" } });
  socket.receive({ type: "pub", channel: "chat:1", offset: 2, data_b64: Buffer.from([0, 255, 7]).toString("base64") });
  assert.equal(got.length, 2);
  assert.deepEqual(got[0], { channel: "chat:1", offset: 1, data: "hi", info: { user: "bob" } });
  assert.ok(got[1].data instanceof Uint8Array);
  assert.deepEqual([...got[1].data], [0, 255, 7]);
  assert.equal(sub.offset, 2);
  assert.deepEqual(socket.take(), []); // no resubscribe
});

test("duplicates are dropped", () => {
  const { client, socket } = connected();
  const { sub, got } = subscribedAt(client, socket, "chat:1", 5);
  for (const offset of [5, 6, 6, 4, 7, 7]) socket.receive(pub("chat:1", offset));
  assert.deepEqual(got, [6, 7]);
  assert.equal(sub.offset, 7);
});

test("a channel without history passes every publication", () => {
  const { client, socket } = connected();
  const got = [];
  client.subscribe("live", { onPublication: (p) => got.push(p.data) });
  socket.receive({ type: "subscribed", id: socket.take()[0].id, channel: "live", epoch: "", offset: 0, recoverable: false });
  for (const data of ["a", "b", "c"]) socket.receive({ type: "pub", channel: "live", offset: 0, data });
  assert.deepEqual(got, ["a", "b", "c"]);
  assert.deepEqual(socket.take(), []);
});

test("a gap makes the client leave and subscribe again from its position, dropping pubs until then", () => {
  const { client, socket } = connected();
  const { sub, got } = subscribedAt(client, socket, "chat:1", 3);
  socket.receive(pub("chat:1", 4));
  socket.receive(pub("chat:1", 6)); // 5 was lost on the way
  const [leave, again] = socket.take();
  assert.deepEqual(leave, { type: "unsubscribe", id: leave.id, channel: "chat:1" });
  assert.deepEqual(again, { type: "subscribe", id: again.id, channel: "chat:1", since: { offset: 4, epoch: "e1" } });
  assert.ok(again.id > leave.id);
  assert.equal(sub.subscribed, false);
  socket.receive(pub("chat:1", 7)); // still in the old subscription: dropped
  socket.receive({ type: "unsubscribed", id: leave.id, channel: "chat:1", reason: "client" });
  socket.receive({ type: "subscribed", id: again.id, channel: "chat:1", epoch: "e1", offset: 4, recoverable: true, recovered: true, missed: 3 });
  for (const offset of [5, 6, 7]) socket.receive(pub("chat:1", offset));
  assert.deepEqual(got, [4, 5, 6, 7]);
  assert.equal(sub.subscribed, true);
  assert.equal(client.subscriptions.get("chat:1"), sub); // our own unsubscribe did not end it
});

test("after a reconnect every subscription is sent again with its position; pubs before its answer are dropped", async () => {
  const { client, socket } = connected();
  const { sub, got } = subscribedAt(client, socket, "chat:1", 10);
  client.subscribe("live");
  socket.receive({ type: "subscribed", id: socket.take()[0].id, channel: "live", epoch: "", offset: 0, recoverable: false });
  socket.receive(pub("chat:1", 11));
  socket.drop();
  await until(() => FakeSocket.all.length === 2, "a second socket");
  assert.equal(sub.subscribed, false); // until the new answer
  const second = FakeSocket.all[1];
  second.accept({ session: "s1", resumed: true, pod: "pod-b" });
  const requests = second.take();
  assert.deepEqual(
    requests.map(({ id, ...rest }) => rest),
    [
      { type: "subscribe", channel: "chat:1", since: { offset: 11, epoch: "e1" } },
      { type: "subscribe", channel: "live" }, // nothing to recover from
    ],
  );
  second.receive(pub("chat:1", 12)); // before the answer: dropped (the recovery brings it)
  second.receive({ type: "subscribed", id: requests[0].id, channel: "chat:1", epoch: "e1", offset: 11, recoverable: true, recovered: true, missed: 1 });
  second.receive(pub("chat:1", 12));
  assert.deepEqual(got, [11, 12]);
  // a late frame of the first socket is not taken
  socket.receive(pub("chat:1", 13));
  assert.deepEqual(got, [11, 12]);
});

test("a server-side subscription calls onsubscription, is tracked and recovered after a reconnect", async () => {
  const client = newClient();
  const seen = [];
  const got = [];
  client.onsubscription = (sub) => {
    seen.push(sub.channel);
    sub.onPublication = (p) => got.push(p.data);
  };
  const { socket } = connected(client);
  socket.receive({ type: "subscribed", channel: "news", epoch: "e9", offset: 2, recoverable: true, recovered: false, missed: 0, server: true });
  assert.deepEqual(seen, ["news"]);
  const sub = client.subscriptions.get("news");
  assert.equal(sub.server, true);
  assert.equal(sub.subscribed, true);
  socket.receive(pub("news", 3, "extra"));
  assert.deepEqual(got, ["extra"]);
  assert.deepEqual(socket.take(), []); // the app asked for nothing
  socket.drop();
  await until(() => FakeSocket.all.length === 2, "a second socket");
  FakeSocket.all[1].accept({ resumed: true });
  assert.deepEqual(
    FakeSocket.all[1].take().map(({ id, ...rest }) => rest),
    [{ type: "subscribe", channel: "news", since: { offset: 3, epoch: "e9" } }],
  );
  assert.deepEqual(seen, ["news"]); // onsubscription only once
});

test("a server subscription of a channel the app subscribed answers its pending subscribe", () => {
  const { client, socket } = connected();
  const sub = client.subscribe("chat:1");
  const [request] = socket.take();
  client.onsubscription = () => assert.fail("not a new channel");
  socket.receive({ type: "subscribed", channel: "chat:1", epoch: "e1", offset: 4, recoverable: true, server: true });
  assert.equal(sub.subscribed, true);
  socket.receive({ type: "error", id: request.id, code: "already_subscribed", message: "" });
  assert.equal(sub.subscribed, true);
  assert.equal(client.subscriptions.get("chat:1"), sub);
});

test("insufficient_state subscribes again with the position", () => {
  const { client, socket } = connected();
  const { sub } = subscribedAt(client, socket, "chat:1", 8);
  socket.receive({ type: "unsubscribed", channel: "chat:1", reason: "insufficient_state" });
  const requests = socket.take();
  assert.deepEqual(
    requests.map(({ id, ...rest }) => rest),
    [{ type: "subscribe", channel: "chat:1", since: { offset: 8, epoch: "e1" } }],
  );
  assert.equal(sub.subscribed, false);
  assert.equal(client.subscriptions.get("chat:1"), sub);
});

test("the server taking a subscription away ends it", () => {
  const { client, socket } = connected();
  const reasons = [];
  const sub = client.subscribe("chat:1", { onUnsubscribed: (reason) => reasons.push(reason) });
  socket.receive({ type: "subscribed", id: socket.take()[0].id, channel: "chat:1", epoch: "e1", offset: 0, recoverable: true });
  socket.receive({ type: "unsubscribed", channel: "chat:1", reason: "server" });
  assert.deepEqual(reasons, ["server"]);
  assert.equal(client.subscriptions.has("chat:1"), false);
  assert.equal(sub.subscribed, false);
});

test("unsubscribe() leaves and stops tracking; the answer is not an event", () => {
  const { client, socket } = connected();
  const reasons = [];
  const { sub } = subscribedAt(client, socket, "chat:1", 1);
  sub.onUnsubscribed = (reason) => reasons.push(reason);
  sub.unsubscribe();
  const [leave] = socket.take();
  assert.deepEqual(leave, { type: "unsubscribe", id: leave.id, channel: "chat:1" });
  socket.receive({ type: "unsubscribed", id: leave.id, channel: "chat:1", reason: "client" });
  assert.deepEqual(reasons, ["client"]);
  assert.equal(client.subscriptions.has("chat:1"), false);
  assert.notEqual(client.subscribe("chat:1"), sub); // a new one
});

test("publish resolves with the reply and rejects with the error's code", async () => {
  const { client, socket } = connected();
  const { sub } = subscribedAt(client, socket, "chat:1", 0);
  const ok = sub.publish("hi");
  const binary = sub.publish(new Uint8Array([1, 2, 3]));
  const refused = sub.publish("too much");
  const [a, b, c] = socket.take();
  assert.deepEqual(a, { type: "publish", id: a.id, channel: "chat:1", data: "hi" });
  assert.deepEqual(b, { type: "publish", id: b.id, channel: "chat:1", data_b64: "AQID" });
  socket.receive({ type: "error", id: c.id, code: "too_big", message: "larger than 65536 bytes" });
  socket.receive({ type: "reply", id: b.id, result: { offset: 2, epoch: "e1" } });
  socket.receive({ type: "reply", id: a.id, result: { offset: 1, epoch: "e1" } });
  assert.deepEqual(await ok, { offset: 1, epoch: "e1" });
  assert.deepEqual(await binary, { offset: 2, epoch: "e1" });
  await assert.rejects(refused, (error) => {
    assert.ok(error instanceof ChannelError);
    assert.equal(error.code, "too_big");
    assert.equal(error.message, "larger than 65536 bytes");
    return true;
  });
});

test("a publish is not queued while disconnected and is rejected, not resent, when the link drops", async () => {
  const client = newClient();
  const sub = client.subscribe("chat:1");
  await assert.rejects(sub.publish("early"), { code: "disconnected" });
  client.start();
  const socket = FakeSocket.all[0];
  socket.accept();
  socket.take();
  const pending = sub.publish("in flight");
  socket.drop();
  await assert.rejects(pending, { code: "disconnected" });
  await until(() => FakeSocket.all.length === 2, "a second socket");
  FakeSocket.all[1].accept({ resumed: true });
  assert.deepEqual(
    FakeSocket.all[1].take().map((frame) => frame.type),
    ["subscribe"], // the subscription, not the publication
  );
});

test("presence resolves with the clients", async () => {
  const { client, socket } = connected();
  const { sub } = subscribedAt(client, socket, "chat:1", 0);
  const answer = sub.presence();
  const [request] = socket.take();
  assert.deepEqual(request, { type: "presence", id: request.id, channel: "chat:1" });
  const clients = [{ user: "alice", session: "s1", transport: "websocket" }];
  socket.receive({ type: "reply", id: request.id, result: { clients } });
  assert.deepEqual(await answer, clients);
});

test("join and leave reach their subscription", () => {
  const { client, socket } = connected();
  const events = [];
  const { sub } = subscribedAt(client, socket, "chat:1", 0);
  sub.onJoin = (info) => events.push(["join", info.user]);
  sub.onLeave = (info) => events.push(["leave", info.user]);
  socket.receive({ type: "join", channel: "chat:1", info: { user: "bob", session: "x" } });
  socket.receive({ type: "leave", channel: "chat:1", info: { user: "bob", session: "x" } });
  assert.deepEqual(events, [["join", "bob"], ["leave", "bob"]]);
});

test("a refused subscribe (permission_denied) ends tracking and calls onError", async () => {
  const { client, socket } = connected();
  const errors = [];
  const sub = client.subscribe("secret:1", { onError: (error) => errors.push(error) });
  const [request] = socket.take();
  socket.receive({ type: "error", id: request.id, code: "permission_denied", message: "not for you" });
  assert.deepEqual(errors, [{ code: "permission_denied", message: "not for you" }]);
  assert.equal(client.subscriptions.has("secret:1"), false);
  assert.equal(sub.subscribed, false);
  socket.drop();
  await until(() => FakeSocket.all.length === 2, "a second socket");
  FakeSocket.all[1].accept({ resumed: true });
  assert.deepEqual(FakeSocket.all[1].take(), []); // not asked again
});

test("unavailable retries the subscribe after a delay", async () => {
  const { client, socket } = connected();
  const sub = client.subscribe("chat:1");
  const [request] = socket.take();
  socket.receive({ type: "error", id: request.id, code: "unavailable", message: "redis" });
  assert.equal(client.subscriptions.get("chat:1"), sub);
  await until(() => socket.sent.length === 1, "the retry");
  const [again] = socket.take();
  assert.equal(again.type, "subscribe");
  assert.ok(again.id > request.id);
  socket.receive({ type: "subscribed", id: again.id, channel: "chat:1", epoch: "e1", offset: 0, recoverable: true });
  assert.equal(sub.subscribed, true);
});

test("the retry delay grows and is bounded", () => {
  const client = new WsfleetClient({ url: "ws://127.0.0.1:1/ws", user: "alice", token: "t" });
  for (let attempt = 0; attempt < 40; attempt++) {
    const delay = client._retryDelay(attempt);
    assert.ok(delay > 0 && delay <= 5000, `attempt ${attempt}: ${delay}`);
  }
  assert.ok(client._retryDelay(0) <= 250);
});

test("channel frames never reach onmessage, messages still do", () => {
  const { client, socket } = connected();
  const messages = [];
  client.onmessage = (message) => messages.push(message);
  const { sub } = subscribedAt(client, socket, "chat:1", 0);
  const answer = sub.presence();
  const [presence] = socket.take();
  socket.receive(pub("chat:1", 1));
  socket.receive({ type: "join", channel: "chat:1", info: { user: "bob" } });
  socket.receive({ type: "leave", channel: "chat:1", info: { user: "bob" } });
  socket.receive({ type: "reply", id: presence.id, result: { clients: [] } });
  socket.receive({ type: "error", id: 999, code: "bad_request", message: "?" });
  socket.receive({ type: "unsubscribed", channel: "other", reason: "server" });
  socket.receive({ type: "subscribed", channel: "news", epoch: "", offset: 0, recoverable: false, server: true });
  socket.receive({ type: "message", seq: 1, data: "plain" });
  assert.deepEqual(messages, [{ seq: 1, data: "plain" }]);
  return answer;
});

test("over SSE and long polling channel requests take the link's ordered send path", () => {
  const client = newClient();
  const posted = [];
  const link = { send: (frame) => Promise.resolve(posted.push(frame)), close() {} };
  client.send("before");
  client.subscribe("chat:1");
  client._frame("poll", link, { type: "welcome", session: "s1", seq: 0, cseq: 0, resumed: false });
  client.subscriptions.get("chat:1").publish("x").catch(() => {});
  assert.deepEqual(
    posted.map((frame) => frame.type),
    ["message", "subscribe", "publish"],
  );
});
