// The chat's page: rooms are channels (chat:<room>), messages are publications the
// backend stamps with their author, the people list is the channel's presence.
import { WsfleetClient } from "/wsfleet.js";

const $ = (id) => document.getElementById(id);
const rooms = new Map(); // channel -> { messages: [], people: Map(session -> user) }
let client = null;
let current = "";

// What the tests (and the curious) can look at.
window.chat = { rooms, get client() { return client; }, join, say, show };

$("login").onsubmit = async (event) => {
  event.preventDefault();
  const name = $("name").value.trim();
  const answer = await fetch(`/token?user=${encodeURIComponent(name)}`).then((r) => r.json());
  if (answer.error) return error(answer.error);
  const { url } = await fetch("/config").then((r) => r.json());
  client = new WsfleetClient({ url, user: answer.user, token: answer.token });
  client.onsubscription = watch; // the lobby: the backend subscribes every session to it
  client.onopen = () => status();
  client.start();
  $("login").hidden = true;
  document.querySelector("main").hidden = false;
};

$("join").onsubmit = (event) => {
  event.preventDefault();
  const room = $("room").value.trim();
  if (room) join(room);
  $("room").value = "";
};

$("say").onsubmit = async (event) => {
  event.preventDefault();
  const text = $("text").value;
  $("text").value = "";
  await say(current, text);
};

function join(room) {
  const channel = room.startsWith("chat:") ? room : `chat:${room}`;
  watch(client.subscribe(channel));
  show(channel);
  return channel;
}

async function say(channel, text) {
  const subscription = client.subscriptions.get(channel);
  if (!subscription) return error(`not in ${channel}`);
  try {
    await subscription.publish(JSON.stringify({ text }));
    error("");
  } catch (refused) {
    error(`${refused.code}: ${refused.message}`);
  }
}

function watch(subscription) {
  const channel = subscription.channel;
  if (!rooms.has(channel)) rooms.set(channel, { messages: [], people: new Map() });
  const room = rooms.get(channel);
  subscription.onPublication = (pub) => {
    try {
      room.messages.push({ offset: pub.offset, ...JSON.parse(pub.data) });
    } catch {
      return; // not a chat message
    }
    if (channel === current) render();
  };
  subscription.onSubscribed = async () => {
    room.people = new Map(
      (await subscription.presence()).map((client) => [client.session, client.user]),
    );
    if (!current) show(channel);
    render();
  };
  subscription.onJoin = (info) => {
    room.people.set(info.session, info.user);
    if (channel === current) render();
  };
  subscription.onLeave = (info) => {
    room.people.delete(info.session);
    if (channel === current) render();
  };
  renderRooms();
}

function show(channel) {
  current = channel;
  render();
}

function status() {
  $("status").textContent = client ? `${client.user} on ${client.pod} (${client.transport})` : "";
}

function error(text) {
  $("error").textContent = text;
}

function renderRooms() {
  $("rooms").replaceChildren(
    ...[...rooms.keys()].map((channel) => {
      const item = document.createElement("li");
      item.textContent = channel.slice("chat:".length);
      item.className = channel === current ? "current" : "";
      item.onclick = () => show(channel);
      return item;
    }),
  );
}

function render() {
  status();
  renderRooms();
  const room = rooms.get(current);
  if (!room) return;
  $("title").textContent = current.slice("chat:".length);
  $("messages").replaceChildren(
    ...room.messages.map((message) => {
      const item = document.createElement("li");
      const who = document.createElement("span");
      who.className = "who";
      who.textContent = message.user;
      item.append(who, document.createTextNode(message.text));
      return item;
    }),
  );
  $("messages").scrollTop = $("messages").scrollHeight;
  const people = [...new Set(room.people.values())].sort();
  $("people").replaceChildren(
    ...people.map((user) => {
      const item = document.createElement("li");
      item.textContent = user;
      return item;
    }),
  );
}
