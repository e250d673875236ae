// The live fleet page: asks for the admin token, reads /fleet/events (Server-Sent Events
// over fetch(), so that the token travels in the Authorization header and never in a URL),
// and redraws the fleet from each summary. Every value goes into the page as text
// (textContent), never as HTML.

const TOKEN_KEY = "wsfleet-admin-token"; // sessionStorage only: gone when the tab closes
const RETRY_MS = 2000;

const $ = (selector) => document.querySelector(selector);

let stream = null; // the AbortController of the open stream

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function row(cells, attributes = {}) {
  const tr = document.createElement("tr");
  for (const [name, value] of Object.entries(attributes)) tr.setAttribute(name, value);
  for (const cell of cells) tr.append(cell instanceof Node ? cell : el("td", cell));
  return tr;
}

function td(content, className) {
  const cell = el("td", null, className);
  if (content instanceof Node) cell.append(content);
  else cell.textContent = content ?? "–";
  return cell;
}

const rate = (value) => (value === null || value === undefined ? "–" : value.toFixed(1));
const ms = (seconds) => (seconds === null || seconds === undefined ? "–" : `${(seconds * 1000).toFixed(1)} ms`);

function showToken(message) {
  $("#fleet").hidden = true;
  $("#forget").hidden = true;
  $("#token-form").hidden = false;
  $("#token-error").textContent = message || "";
  $("#connection").textContent = "not connected";
  $("#token").focus();
}

function forget(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  if (stream) stream.abort();
  stream = null;
  showToken(message);
}

async function connect() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) return showToken();
  $("#token-form").hidden = true;
  $("#forget").hidden = false;
  $("#connection").textContent = "connecting…";
  const controller = new AbortController();
  stream = controller;
  try {
    const response = await fetch("/fleet/events", {
      headers: { Authorization: `Bearer ${token}`, Accept: "text/event-stream" },
      cache: "no-store",
      signal: controller.signal,
    });
    if (response.status === 401 || response.status === 403) {
      const answer = await response.json().catch(() => ({}));
      return forget(answer.error || `the admin API answered HTTP ${response.status}`);
    }
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    await readEvents(response.body, render);
    throw new Error("the stream ended");
  } catch (problem) {
    if (controller.signal.aborted) return;
    $("#connection").textContent = `reconnecting (${problem.message})`;
    $("#connection").className = "bad";
    setTimeout(() => { if (stream === controller) connect(); }, RETRY_MS);
  }
}

async function readEvents(body, onData) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5)).join("\n");
      if (data) onData(JSON.parse(data));
    }
  }
}

function render(summary) {
  window.fleetSummary = summary; // for the curious, in the console
  $("#fleet").hidden = false;
  $("#connection").textContent = `live · ${new Date(summary.at * 1000).toLocaleTimeString()}`;
  $("#connection").className = "good";
  const totals = summary.totals;
  $("#pods-total").textContent = `${totals.serving} serving / ${totals.pods}`;
  $("#connections-total").textContent = totals.connections;
  $("#accepted-rate").textContent = rate(totals.accepted_per_s);
  $("#policy-version").textContent = summary.policy.version;
  const redis = summary.redis;
  $("#redis").textContent = redis.ok ? `ok · ${redis.latency_ms} ms` : `down: ${redis.error}`;
  $("#redis").className = redis.ok ? "good" : "bad";
  renderPods(summary.pods);
  renderDrains(summary.drains);
  renderEnvoys(summary.envoys, summary.policy.snapshot_versions);
  renderCertificates(summary.certificates);
}

function histogram(view) {
  const box = el("div", null, "histogram");
  if (!view) return box;
  const top = Math.max(1, ...view.buckets.map((b) => b.count));
  for (const bucket of view.buckets) {
    const bar = el("span");
    bar.style.height = `${Math.round((24 * bucket.count) / top)}px`;
    bar.title = `${bucket.le_s === null ? "more" : `≤ ${bucket.le_s * 1000} ms`}: ${bucket.count}`;
    box.append(bar);
  }
  return box;
}

function renderPods(pods) {
  const body = $("#pods tbody");
  body.replaceChildren(
    ...pods.map((pod) => {
      const transports = Object.entries(pod.connections_by_transport)
        .filter(([, n]) => n > 0).map(([t, n]) => `${t} ${n}`).join(", ");
      const refused = Object.entries(pod.refused)
        .map(([reason, total]) => `${reason}: ${total} (${rate(pod.refused_per_s[reason])}/s)`)
        .join("; ");
      const rtt = pod.ping_rtt;
      return row(
        [
          td(pod.pod_id),
          td(pod.state, `state state-${pod.state}`),
          td(String(pod.connections), "connections"),
          td(rate(pod.accepted_per_s), "accepted"),
          td(refused || "none", "refused"),
          td(rtt ? `${ms(rtt.p50_s)} / ${ms(rtt.p90_s)} / ${ms(rtt.p99_s)} (${rtt.count})` : pod.stats_error || "–"),
          td(histogram(rtt)),
          td(`${pod.heartbeat_age_s.toFixed(1)} s ago`),
        ],
        { "data-pod": pod.pod_id, title: transports },
      );
    }),
  );
}

function progress(value, max) {
  const bar = el("progress");
  bar.max = max > 0 ? max : 1;
  bar.value = max > 0 ? value : 1;
  return bar;
}

function renderDrains(drains) {
  $("#no-drains").hidden = drains.length > 0;
  $("#drains").hidden = drains.length === 0;
  $("#drains tbody").replaceChildren(
    ...drains.map((drain) => {
      const pods = Object.entries(drain.pods).map(([id, state]) => `${id} (${state})`).join(", ");
      const used = el("span");
      used.append(progress(drain.budget_used, 1), ` ${drain.elapsed_s.toFixed(0)} / ${drain.budget_s} s`);
      const closed = el("span");
      closed.append(progress(drain.closed, drain.total), ` ${drain.closed} / ${drain.total}`);
      return row(
        [
          td(drain.drain_id ?? "pod's own"),
          td(pods, "pods"),
          td(drain.state, "state"),
          td(used),
          td(closed),
        ],
        { "data-drain": drain.drain_id ?? "", "data-pods": Object.keys(drain.pods).join(" ") },
      );
    }),
  );
}

function renderEnvoys(envoys, versions) {
  $("#snapshot-versions").textContent =
    Object.entries(versions).map(([type, version]) => `${type} ${version}`).join(" · ") || "–";
  $("#envoys tbody").replaceChildren(
    ...envoys.map((envoy) => {
      const acked = Object.entries(envoy.acked).map(([type, version]) => `${type} ${version || "–"}`).join(" · ");
      const nack = envoy.last_nack
        ? `${envoy.last_nack.type} ${envoy.last_nack.version}: ${envoy.last_nack.message}`
        : "none";
      const drain = envoy.drain
        ? `draining · ${(envoy.drain.elapsed_s ?? 0).toFixed(0)} / ${envoy.drain.budget_s} s`
        : "–";
      return row(
        [
          td(envoy.node_id),
          td(envoy.cluster),
          td(`${envoy.protocol}${envoy.connected ? "" : " (disconnected)"}`, envoy.connected ? "" : "muted"),
          td(acked, "acked"),
          td(nack, envoy.last_nack ? "nack bad" : "nack"),
          td(drain, "drain"),
        ],
        { "data-node": envoy.node_id },
      );
    }),
  );
}

function renderCertificates(certificates) {
  $("#no-certificates").hidden = certificates.length > 0;
  $("#certificates").hidden = certificates.length === 0;
  $("#certificates tbody").replaceChildren(
    ...certificates.map((cert) => {
      const days = cert.expires_in_s / 86400;
      const when = days < 0 ? `expired ${(-days).toFixed(1)} days ago` : `in ${days.toFixed(1)} days`;
      return row([td(cert.name), td(cert.subject), td(when, days < 14 ? "bad" : "")], { "data-cert": cert.name });
    }),
  );
}

$("#token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("#token").value.trim();
  $("#token").value = "";
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  connect();
});
$("#forget").addEventListener("click", () => forget());
connect();
