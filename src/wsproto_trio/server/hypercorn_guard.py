"""A guard for one Hypercorn defect that lets a single client stop the whole server.

Hypercorn 0.17/0.18 buffers a websocket message in ``WebsocketBuffer``. When a
text message grows past ``websocket_max_message_size`` it sends close 1009 but
keeps the half-filled text buffer; if the client's next frame (already in
flight) is binary, ``extend`` writes bytes into a ``StringIO`` and raises
``TypeError``. Nothing in Hypercorn catches it, and the exception climbs through
the listener's nursery: the server process exits. The same happens the other
way round (bytes buffer, then text). Found by ``tests/faults/test_fuzz_live.py``.

A second defect sits beside it: after raising ``FrameTooLargeError`` Hypercorn
stops reading that batch of events but keeps the over-long buffer, so every
later frame raises again and stops the loop again, and the client's close frame
behind them is not processed until more bytes arrive, which never happens: the
client waits out its close timeout.

The guard makes a buffer that has already gone over the limit swallow whatever
follows (the connection is closing with 1009: its frames are void), and drops a
frame of the other kind instead of crashing. Hypercorn's loop then reaches the
client's close frame. The app still checks ``MAX_MESSAGE_BYTES`` itself. Applied
once, when an app is built, so both start commands get it.
"""

from __future__ import annotations

from io import StringIO
from typing import Any

from hypercorn.protocol import ws_stream
from wsproto.events import Message, TextMessage

_APPLIED = "_wsproto_trio_guarded"


def guard_websocket_buffer() -> None:
    buffer_class: Any = ws_stream.WebsocketBuffer
    if getattr(buffer_class, _APPLIED, False):
        return
    original = buffer_class.extend

    def extend(self: Any, event: Message[Any]) -> None:
        if self.length > self.max_length:
            return  # already refused with 1009; the rest of the message is void
        if self.value is not None and isinstance(event, TextMessage) != isinstance(
            self.value, StringIO
        ):
            return  # cannot happen on a well-formed stream; never crash on it
        original(self, event)

    buffer_class.extend = extend
    setattr(buffer_class, _APPLIED, True)
