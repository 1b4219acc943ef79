"""Chat: rooms. A client joins the room named in its query (`?room=NAME`,
default `lobby`); every text message goes to everyone else in that room and
to nobody elsewhere; joins and leaves are announced to the room. The host
does the fan-out through one topic per room. Messages are JSON objects:

- `{"type":"welcome","id":N,"room":"lobby","members":[...]}` to a newcomer,
- `{"type":"join","id":N}` and `{"type":"leave","id":N,"code":C,"reason":"..."}`,
- `{"type":"message","from":N,"text":"..."}`.

Every message is byte for byte what the Rust chat plugin sends, so clients
cannot tell the two apart.
"""

import string

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host
from wit_world.imports.types import (
    Accept,
    CloseInfo,
    Message,
    Message_Text,
    Reject,
    Request,
)

# One instance serves the whole route, so who is in which room lives here:
# connection id -> room name.
rooms: dict[int, str] = {}

# json.dumps escapes non-ASCII and uses other escapes than the Rust plugin, so
# strings are escaped by hand: the short forms for these five, \u00XX (lower-case
# hex) for the rest of the control characters, and everything else as it is.
_JSON_ESCAPES = {c: f"\\u{c:04x}" for c in range(0x20)}
_JSON_ESCAPES.update(
    {ord('"'): '\\"', ord("\\"): "\\\\", ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"}
)

# str.isalnum() would also take non-ASCII letters and digits.
_ROOM_CHARS = frozenset(string.ascii_letters + string.digits + "-_")


def json_string(s: str) -> str:
    """`s` as a JSON string literal."""
    return '"' + s.translate(_JSON_ESCAPES) + '"'


def room_of(query: str | None) -> str:
    """The room named by `?room=NAME`: 1 to 64 of A-Z, a-z, 0-9, '-' and '_'."""
    name = next(
        (pair[len("room="):] for pair in (query or "").split("&") if pair.startswith("room=")),
        "lobby",
    )
    if 1 <= len(name) <= 64 and all(c in _ROOM_CHARS for c in name):
        return name
    raise Err(Reject(status=400, reason="room names are 1-64 of A-Z, a-z, 0-9, '-' and '_'"))


def topic(room: str) -> str:
    return f"room:{room}"


class Handler(exports.Handler):
    def on_connect(self, conn: int, req: Request) -> Accept:
        room = room_of(req.query)
        members = ",".join(str(member) for member in sorted(rooms) if rooms[member] == room)
        welcome = f'{{"type":"welcome","id":{conn},"room":{json_string(room)},"members":[{members}]}}'
        # A failed send or subscribe means the client is already gone or too
        # slow; the host closes it and on-close cleans up, so neither is fatal.
        try:
            host.send(conn, Message_Text(welcome))
        except Err:
            pass
        # Announce before subscribing, so that the newcomer does not hear its own join.
        host.publish(topic(room), Message_Text(f'{{"type":"join","id":{conn}}}'), None)
        try:
            host.subscribe(conn, topic(room))
        except Err:
            pass
        rooms[conn] = room
        return Accept(subprotocol=None)

    def on_message(self, conn: int, msg: Message) -> None:
        room = rooms.get(conn)
        if not isinstance(msg, Message_Text) or room is None:
            return
        out = f'{{"type":"message","from":{conn},"text":{json_string(msg.value)}}}'
        host.publish(topic(room), Message_Text(out), conn)

    def on_close(self, conn: int, info: CloseInfo) -> None:
        room = rooms.pop(conn, None)
        if room is None:
            return
        out = f'{{"type":"leave","id":{conn},"code":{info.code},"reason":{json_string(info.reason)}}}'
        # The host ended the connection's subscription before this call.
        host.publish(topic(room), Message_Text(out), None)

    def on_timer(self, token: int) -> None:
        pass
