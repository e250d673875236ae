"""A chat: rooms are channels (history, presence, join and leave), messages are client
publications the backend approves and stamps with their author. Run by
``wsfleet up --app chat``, which serves its page; see docs/backend.md."""
