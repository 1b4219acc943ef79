"""Fetcher: HTTP requests to backends, from a plugin that never blocks on them.

- A client that connects with `?check=URL` (the URL percent-encoded) is let
  in only if a GET of that URL answers 200: until then its handshake waits.
  Any other status refuses it with that status (403 for a status that is not
  an error) and the reason `denied`; no answer at all refuses it with 502 and
  the error's kind (`connect-failed`, `timeout`, ...). Without `check`, it is
  let in at once.
- Every text message is a URL to GET; the answer comes back as
  `"STATUS BODY"` (`"200 hello"`), or `"error KIND"` (`"error not-allowed"`)
  when there is no response.

The route must grant the backends, as in
`allowed-outbound = ["http://127.0.0.1:8000"]`; a URL it does not grant is
answered `not-allowed` without anything being sent.
"""

import functools
from urllib.parse import unquote

import berth

# The requests each connection is waiting on, so that its close can cancel
# them: in the route model one instance serves every connection, and an
# answer for a connection that has gone is no use.
in_flight: dict[int, set[int]] = {}


def decide(conn: int, result: berth.FetchResult) -> None:
    """Answers `conn`'s pending handshake from the check request's result."""
    try:
        if isinstance(result, berth.FetchError):
            berth.reject(conn, 502, result.kind)
        elif result.status == 200:
            berth.accept(conn)
        else:
            # A redirect or other success must still refuse, and the host
            # takes only 400-599 as a refusal.
            status = result.status if 400 <= result.status <= 599 else 403
            berth.reject(conn, status, "denied")
    except berth.HostError:
        # The client gave up, or its handshake timed out, while we waited.
        pass


def reply(conn: int, result: berth.FetchResult) -> None:
    """Sends `conn` what its request got."""
    requests = in_flight.get(conn)
    if requests is not None:
        requests.discard(result.request_id)
    if isinstance(result, berth.FetchError):
        text = f"error {result.kind}"
    else:
        # A backend's body need not be UTF-8; a client gets text all the same.
        text = f"{result.status} {result.text(errors='replace')}"
    try:
        berth.send(conn, text)
    except berth.HostError:
        # The client is gone or too slow; the host closes it.
        pass


class Handler(berth.Plugin):
    def on_connect(self, conn: int, req: berth.Request):
        check = berth.query_param(req, "check")
        if check is None:
            return None
        try:
            berth.fetch(unquote(check), functools.partial(decide, conn))
        except berth.FetchError as refused:
            # Refused before anything was sent (a URL not granted, say):
            # there is nothing to wait for.
            raise berth.Reject(502, refused.kind) from None
        return berth.PENDING

    def on_message(self, conn: int, msg: str | bytes) -> None:
        if type(msg) is not str:
            return
        try:
            request_id = berth.fetch(msg, functools.partial(reply, conn))
        except berth.FetchError as refused:
            reply(conn, refused)
            return
        in_flight.setdefault(conn, set()).add(request_id)

    def on_close(self, conn: int, code: int, reason: str) -> None:
        for request_id in in_flight.pop(conn, ()):
            berth.cancel_fetch(request_id)
