// node --test sdk/js/test : the browser SDK's backoff, without a browser.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Backoff } from "../wsfleet.js";

function seeded(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state * 1664525 + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
}

test("delays stay inside a doubling window that stops at the cap", () => {
  const backoff = new Backoff({ baseMs: 100, capMs: 5000, random: seeded(1) });
  const windows = [];
  for (let i = 0; i < 10; i++) {
    windows.push(backoff.window());
    const delay = backoff.nextDelay();
    assert.ok(delay >= 0 && delay <= windows.at(-1));
  }
  assert.deepEqual(windows.slice(0, 6), [100, 200, 400, 800, 1600, 3200]);
  assert.equal(windows.at(-1), 5000);
});

test("clients losing their pod together retry spread over the window", () => {
  const buckets = new Array(10).fill(0);
  for (let seed = 0; seed < 1000; seed++) {
    const delay = new Backoff({ baseMs: 1000, capMs: 10000, random: seeded(seed * 7919 + 1) }).nextDelay();
    buckets[Math.min(9, Math.floor(delay / 100))] += 1;
  }
  assert.ok(Math.max(...buckets) / 100 < 1.6, `peak/mean ${Math.max(...buckets) / 100}`);
});

test("a server hint is a floor", () => {
  const backoff = new Backoff({ baseMs: 200, capMs: 2000, random: seeded(3) });
  for (let i = 0; i < 20; i++) assert.ok(backoff.nextDelay(1500) >= 1500);
});

test("the time budget ends the retries", () => {
  const backoff = new Backoff({ baseMs: 1000, capMs: 1000, maxElapsedMs: 5000, random: seeded(4) });
  let total = 0;
  let delay;
  while ((delay = backoff.nextDelay()) != null) total += delay;
  assert.ok(total <= 5000);
});
