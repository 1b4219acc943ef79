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

import berth

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


def room_of(req: berth.Request) -> str:
    """The room named by `?room=NAME`: 1 to 64 of A-Z, a-z, 0-9, '-' and '_'."""
    name = berth.query_param(req, "room")
    if name is None:
        name = "lobby"
    if 1 <= len(name) <= 64 and all(c in _ROOM_CHARS for c in name):
        return name
    raise berth.Reject(400, "room names are 1-64 of A-Z, a-z, 0-9, '-' and '_'")


def topic(room: str) -> str:
    return f"room:{room}"


class Handler(berth.Plugin):
    def on_connect(self, conn: int, req: berth.Request) -> None:
        room = room_of(req)
        members = ",".join(str(member) for member in sorted(rooms) if rooms[member] == room)
        welcome = f'{{"type":"welcome","id":{conn},"room":{json_string(room)},"members":[{members}]}}'
        # A failed send or subscribe means the client is already gone or too
        # slow; the host closes it and on_close cleans up, so neither is fatal.
        try:
            berth.send(conn, welcome)
        except berth.HostError:
            pass
        # Announce before subscribing, so that the newcomer does not hear its own join.
        berth.publish(topic(room), f'{{"type":"join","id":{conn}}}')
        try:
            berth.subscribe(conn, topic(room))
        except berth.HostError:
            pass
        rooms[conn] = room

    def on_message(self, conn: int, msg: str | bytes) -> None:
        room = rooms.get(conn)
        if type(msg) is not str or room is None:
            return
        out = f'{{"type":"message","from":{conn},"text":{json_string(msg)}}}'
        berth.publish(topic(room), out, exclude=conn)

    def on_close(self, conn: int, code: int, reason: str) -> None:
        room = rooms.pop(conn, None)
        if room is None:
            return
        out = f'{{"type":"leave","id":{conn},"code":{code},"reason":{json_string(reason)}}}'
        # The host ended the connection's subscription before this call.
        berth.publish(topic(room), out)
