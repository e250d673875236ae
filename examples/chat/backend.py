"""The chat's backend, written with the backend kit (``wsfleet.backend``).

- every session is subscribed to ``chat:lobby`` when it opens (a server-side
  subscription: its client recovers it after a reconnect like its own);
- a client publishes ``{"text": "..."}`` to a room (``chat:<room>``: the policy's ``chat``
  namespace sends client publications to the backend first); the backend refuses what is
  not a message and publishes ``{"user", "text", "at"}``: the author comes from the
  session, never from the client;
- any other message is echoed (the local fleet's start-up probe is an echo).
"""

from __future__ import annotations

import json
import time

from wsfleet.backend import Backend, Decision, Session, reject

LOBBY = "chat:lobby"
MAX_TEXT = 500  # characters in one chat message


def stamp(user_id: str, data: str | bytes, now_ms: int) -> Decision:
    """What the backend makes of a client's publication: the message with its author and
    time, or a refusal saying why."""
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        return reject('a chat message is {"text": "..."}')
    text = body.get("text") if isinstance(body, dict) else None
    if not isinstance(text, str) or not text.strip():
        return reject('a chat message is {"text": "..."} with some text')
    if len(text) > MAX_TEXT:
        return reject(f"a chat message has at most {MAX_TEXT} characters")
    stamped = {"user": user_id, "text": text.strip(), "at": now_ms}
    return Decision(True, data=json.dumps(stamped, separators=(",", ":")))


class ChatBackend(Backend):
    def on_open(self, session: Session) -> None:
        session.subscribe(LOBBY)

    def on_message(self, session: Session, data: str | bytes) -> None:
        session.send(data)

    def on_publication(self, session: Session, channel: str, data: str | bytes) -> Decision:
        return stamp(session.user_id, data, int(time.time() * 1000))
