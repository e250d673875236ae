// node --test sdk/js/test : a refreshed token goes to the live session and to reconnects.
import { test } from "node:test";
import assert from "node:assert/strict";
import { WsfleetClient } from "../wsfleet.js";

test("refreshToken sends a refresh frame on the live link and keeps the token", () => {
  const client = new WsfleetClient({ url: "ws://127.0.0.1:1/ws", user: "alice", token: "old" });
  const sent = [];
  client._link = { send: (frame) => sent.push(frame) };
  client.connected = true;
  client.refreshToken("new");
  assert.deepEqual(sent, [{ type: "refresh", token: "new" }]);
  assert.equal(client.token, "new"); // the next reconnect presents it
});

test("without a live link the token is only kept for the next connect", () => {
  const client = new WsfleetClient({ url: "ws://127.0.0.1:1/ws", user: "alice", token: "old" });
  client.refreshToken("new");
  assert.equal(client.token, "new");
});
