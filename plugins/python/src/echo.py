"""Echo: every message goes back to its sender, text as text and binary as binary."""

import berth


class Handler(berth.Plugin):
    def on_message(self, conn: int, msg: str | bytes) -> None:
        try:
            berth.send(conn, msg)
        except berth.HostError:
            # The client is gone or too slow; the host closes it.
            pass
