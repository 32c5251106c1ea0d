"""wsproto_trio: a WebSocket pub/sub server on trio that scales out through Redis."""

__version__ = "0.1.0"
