"""The server API for applications: publish, send, subscribe, presence, history.

See docs/channels.md."""
