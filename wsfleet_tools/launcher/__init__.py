"""The local fleet: every part as a child process on loopback (``wsfleet up``)."""
