"""{{name}}: a berth plugin. It greets each connection and echoes its messages.

berth calls the Handler methods as connections come and go; `host` holds what
a plugin can ask of berth (send, close, topics, timers, config values, log
lines; see wit/berth.wit). The `wit_world` bindings are generated from the WIT
at build time.
"""

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host
from wit_world.imports.types import Accept, CloseInfo, Message, Message_Text, Request


def try_send(conn: int, msg: Message) -> None:
    """Sends, ignoring failure: a failed send means the client is gone or too
    slow, and berth closes it on its own."""
    try:
        host.send(conn, msg)
    except Err:
        pass


class Handler(exports.Handler):
    def on_connect(self, conn: int, req: Request) -> Accept:
        # To refuse the connection with an HTTP status instead:
        #   raise Err(Reject(status=403, reason="not allowed"))
        # Sent now, delivered right after the handshake completes.
        try_send(conn, Message_Text("hello from {{name}}"))
        return Accept(subprotocol=None)

    def on_message(self, conn: int, msg: Message) -> None:
        try_send(conn, msg)

    def on_close(self, conn: int, info: CloseInfo) -> None:
        pass

    def on_timer(self, token: int) -> None:
        pass
