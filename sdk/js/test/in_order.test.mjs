// node --test sdk/js/test : SSE and long-polling posts leave in order, one at a time.
import { test } from "node:test";
import assert from "node:assert/strict";
import { inOrder } from "../wsfleet.js";

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

test("posts fired together arrive in the order they were sent", async () => {
  const arrived = [];
  let inFlight = 0;
  let most = 0;
  const send = inOrder(async (frame) => {
    inFlight += 1;
    most = Math.max(most, inFlight);
    await pause(frame.cseq % 2 ? 15 : 1); // odd ones are slow: concurrent posts would reorder
    arrived.push(frame.cseq);
    inFlight -= 1;
  });
  await Promise.all([1, 2, 3, 4, 5].map((cseq) => send({ cseq })));
  assert.deepEqual(arrived, [1, 2, 3, 4, 5]);
  assert.equal(most, 1);
});

test("a failed post is reported to its sender and does not hold up the next", async () => {
  const arrived = [];
  const send = inOrder(async (frame) => {
    if (frame.cseq === 2) throw new Error("send refused: 503");
    arrived.push(frame.cseq);
  });
  const results = await Promise.allSettled([1, 2, 3].map((cseq) => send({ cseq })));
  assert.deepEqual(
    results.map((r) => r.status),
    ["fulfilled", "rejected", "fulfilled"],
  );
  assert.deepEqual(arrived, [1, 3]);
});
