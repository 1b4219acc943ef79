"""{{name}}: a berth plugin. It greets each connection and echoes its messages.

berth calls the Handler methods as connections come and go, and the `berth`
package (berth's Python SDK, in berth/__init__.py) holds what a plugin can ask
of berth: send, publish, close, subscribe, timers, config values, log lines,
and state that outlives the instance (history, members, berth.store).
"""

import berth


def try_send(conn: int, msg: str | bytes) -> None:
    """Sends, ignoring failure: a failed send means the client is gone or too
    slow, and berth closes it on its own."""
    try:
        berth.send(conn, msg)
    except berth.HostError:
        pass


class Handler(berth.Plugin):
    def on_connect(self, conn: int, req: berth.Request) -> None:
        # To refuse the connection with an HTTP status instead:
        #   raise berth.Reject(403, "not allowed")
        # Sent now, delivered right after the handshake completes.
        try_send(conn, "hello from {{name}}")

    def on_message(self, conn: int, msg: str | bytes) -> None:
        # msg is a str for a text message, bytes for a binary one; send
        # sends a str as text and bytes as binary.
        try_send(conn, msg)

    def on_close(self, conn: int, code: int, reason: str) -> None:
        pass

    def on_timer(self, token: int) -> None:
        pass
