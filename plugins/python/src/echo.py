"""Echo: every message goes back to its sender, text as text and binary as binary."""

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host
from wit_world.imports.types import Accept, CloseInfo, Message, Request


class Handler(exports.Handler):
    def on_connect(self, conn: int, req: Request) -> Accept:
        return Accept(subprotocol=None)

    def on_message(self, conn: int, msg: Message) -> None:
        # componentize-py 0.25.1 never frees the copy it makes of a `bytes`
        # argument to a host call, so each binary message sent costs the
        # instance its size in memory for good. An instance that echoes enough
        # binary data reaches its memory limit and traps; berth then starts a
        # fresh one (route model) or closes the connection with 1011.
        try:
            host.send(conn, msg)
        except Err:
            # The client is gone or too slow; the host closes it.
            pass

    def on_close(self, conn: int, info: CloseInfo) -> None:
        pass

    def on_timer(self, token: int) -> None:
        pass
