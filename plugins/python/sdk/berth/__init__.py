"""Write berth plugins in Python.

A plugin is a module with a class named ``Handler`` that subclasses
:class:`Plugin` and overrides the methods for the events it cares about; every
method defaults to doing nothing (``on_connect`` to accepting). This one sends
every message back to its sender::

    import berth

    class Handler(berth.Plugin):
        def on_message(self, conn, msg):
            try:
                berth.send(conn, msg)
            except berth.HostError:
                pass  # the client is gone or too slow; berth closes it

componentize-py builds the module into a component (``componentize-py
--wit-path wit --world plugin componentize -p . -p SDK_DIR MODULE``, where
SDK_DIR is the folder holding this ``berth`` package), generating the
``wit_world`` bindings this package wraps from ``wit/berth.wit``.

The events:

- ``on_connect(self, conn, req)``: a client asks to open a connection. Return
  ``None`` (or fall off the end) to accept it, an :class:`Accept` to accept it
  with a subprotocol, or raise :class:`Reject` to refuse the upgrade with an
  HTTP status. Or return :data:`PENDING` to decide later, say once a backend
  has answered: call :func:`accept` or :func:`reject` before the route's
  ``handshake-timeout`` (the client waits for its answer until then, and gets
  503 after).
- ``on_message(self, conn, msg)``: a message arrived; ``msg`` is a ``str`` for
  a text message and ``bytes`` for a binary one.
- ``on_close(self, conn, code, reason)``: the connection has ended, with this
  close code (an ``int``) and reason (a ``str``, often empty). Called exactly
  once for every accepted connection, after its last message.
- ``on_timer(self, token)``: a timer set with :func:`set_timer` fired.
- ``on_response(self, request_id, result)``: the answer to a :func:`fetch`
  made without a callback.

The host calls: :func:`send`, :func:`publish`, :func:`close`,
:func:`subscribe`, :func:`unsubscribe`, :func:`set_timer`,
:func:`cancel_timer`, :func:`config_get`, :func:`log`, and :func:`accept` and
:func:`reject` for a pending connection. A ``str`` message goes out as text,
``bytes``, ``bytearray`` or ``memoryview`` as binary. A call that does not
take effect raises :class:`HostError`, whose ``error`` says why (a
:class:`ConnError`, :class:`PublishError`, :class:`TimerError`,
:class:`HistoryError`, :class:`StateError` or :class:`OutboundError`
member).

HTTP requests to the backends the route was granted (``allowed-outbound`` in
the config; nothing by default) never block the instance: :func:`fetch`
returns the request's id at once, and when the answer arrives, in a later
batch, calls the callback it was given with a :class:`Response` (``status``,
``headers``, ``body``, :meth:`Response.text`, :meth:`Response.json`) or a
:class:`FetchError` (``kind`` is ``"timeout"``, ``"connect-failed"`` and so
on). A request refused before anything is sent (``"not-allowed"``,
``"invalid-request"``, ``"too-many-requests"``) raises that
:class:`FetchError` from :func:`fetch` instead. The callback is where the
work goes on, and it is called as a handler method is (an exception that
escapes it fails the call the same way)::

    def on_message(self, conn, msg):
        def reply(result):
            if isinstance(result, berth.FetchError):
                text = f"error {result.kind}"
            else:
                text = f"{result.status} {result.text()}"
            try:
                berth.send(conn, text)
            except berth.HostError:
                pass  # the client left while the backend answered

        try:
            berth.fetch("http://127.0.0.1:9000/quote", reply, timeout_ms=2000)
        except berth.FetchError as refused:
            reply(refused)

:func:`cancel_fetch` abandons a request. Requests end with their instance: in
the ``connection`` model, a connection's requests end when it closes.

State that outlives the instance, which berth keeps per namespace (on disk,
or in Redis with a broker, so every instance and every node sees the same):

- :func:`history`: a topic's stored messages, when the route keeps history
  (``history-size``); :func:`publish` answers with where it stored each one.
- :func:`members` and :func:`count_members`: the connections that subscribed
  to a topic with a member description, on every node.
- ``berth.store``: a key-value store, :meth:`Store.get`,
  :meth:`Store.get_text`, :meth:`Store.set`, :meth:`Store.delete`,
  :meth:`Store.increment` and :meth:`Store.compare_and_set`.

A position in a topic's history is a ``str``, ``EPOCH-SEQ`` with the epoch
as 16 lower-case hex digits and the sequence number in decimal
(``"00a1b2c3d4e5f607-42"``), the same text the Rust SDK writes: hand it to
clients as it is, and read what they send back with :func:`parse_position`.

componentize-py makes the one ``Handler`` instance while it builds the
component, and the component starts from that snapshot: ``__init__`` runs at
build time, so it may set up state but not call the host. The host calls an
instance one event at a time, never concurrently, so state lives in plain
attributes (or module globals). In berth's ``route`` instance model that state
is shared by every connection of the route; in the ``connection`` model each
connection gets a fresh instance, so its own copy.

An exception that escapes a handler method fails the host's call as a trap
would: the traceback goes to berth's log, and the instance is dropped with its
state and the events of the batch after the one being handled (see
``on-events`` in ``wit/berth.wit``). Catch what you can handle.

Binary messages are sent as ``binary-latin1`` strings (each byte as the
character of the same number), never as ``list<u8>``: componentize-py 0.25.1
never frees its copy of a ``bytes`` argument to a host call, but it does free
strings, so this way sending binary data keeps no memory. The store's values
and request bodies are ``list<u8>`` in the contract, with no string form, so
every :meth:`Store.set` and :meth:`Store.compare_and_set` does leave its
value's bytes behind in the instance (values are at most 64 KiB), and every
:func:`fetch` with a body its body: an instance that writes or posts much
should run in the ``connection`` model or under a ``max-memory`` with room
for it.
"""

from __future__ import annotations

import functools
import json as _json
import re
from dataclasses import dataclass
from collections.abc import Callable, Iterable, Mapping
from typing import List, Optional, Tuple, Union

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import host as _host
from wit_world.imports import outbound as _outbound
from wit_world.imports import state as _state
from wit_world.imports.outbound import OutboundRequest as _OutboundRequest
from wit_world.imports.state import HistoryError, Member, StateError
from wit_world.imports.types import (
    ConnectAnswer_Accept,
    ConnectAnswer_Pending,
    ConnectAnswer_Reject,
    ConnError,
    Event_Close,
    Event_Message,
    Event_Response,
    Event_Timer,
    LogLevel,
    Message_BinaryLatin1,
    Message_Text,
    MessageKind,
    OutboundError,
    Position,
    PublishError,
    Request,
    TimerError,
)
from wit_world.imports.types import Accept as _WitAccept
from wit_world.imports.types import Reject as _WitReject

__all__ = [
    "Accept",
    "ConnError",
    "Data",
    "FetchError",
    "FetchResult",
    "HistoryError",
    "HistoryPage",
    "HostError",
    "Kept",
    "LogLevel",
    "Member",
    "OutboundError",
    "PENDING",
    "Plugin",
    "Position",
    "PublishError",
    "Published",
    "Reject",
    "Request",
    "Response",
    "StateError",
    "Store",
    "TimerError",
    "accept",
    "cancel_fetch",
    "cancel_timer",
    "close",
    "config_get",
    "count_members",
    "fetch",
    "format_position",
    "header",
    "history",
    "log",
    "members",
    "parse_position",
    "publish",
    "query_param",
    "reject",
    "send",
    "set_timer",
    "store",
    "subscribe",
    "unsubscribe",
]

#: What :func:`send` and :func:`publish` take: text as ``str``, binary as any
#: bytes-like object.
Data = Union[str, bytes, bytearray, memoryview]


@dataclass
class Accept(_WitAccept):
    """How ``on_connect`` accepts a connection: ``Accept()`` answers with no
    subprotocol, ``Accept("chat.v2")`` with that one (it must be one of
    ``req.subprotocols``)."""

    subprotocol: Optional[str] = None


class Reject(Exception):
    """Raised from ``on_connect`` to refuse the connection: the client gets
    this HTTP ``status`` (400-599; 401, 403 and 429 are typical) with
    ``reason`` as the text/plain body, instead of 101 Switching Protocols."""

    def __init__(self, status: int, reason: str = "") -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason


def _kind(error) -> str:
    """The WIT name of an error case: ``ConnError.UNKNOWN_CONNECTION`` is
    ``"unknown-connection"``."""
    return error.name.lower().replace("_", "-")


class HostError(Exception):
    """A host call did not take effect. ``error`` says why: a
    :class:`ConnError` member (``send``, ``close``, ``subscribe``,
    ``unsubscribe``, ``accept``, ``reject``), a :class:`PublishError` one
    (``publish``), a :class:`TimerError` one (``set_timer``), a
    :class:`HistoryError` one (``history``), a :class:`StateError` one
    (``members``, ``count_members`` and the ``store`` calls) or an
    :class:`OutboundError` one (``fetch``, as its subclass
    :class:`FetchError`). ``str(e)`` names the call and the WIT error case,
    as in ``"history: lost"``."""

    def __init__(
        self,
        call: str,
        error: Union[ConnError, PublishError, TimerError, HistoryError, StateError, OutboundError],
    ) -> None:
        super().__init__(f"{call}: {_kind(error)}")
        self.error = error


class _Pending:
    __slots__ = ()

    def __repr__(self) -> str:
        return "berth.PENDING"


#: Returned from ``on_connect`` to decide the connection later with
#: :func:`accept` or :func:`reject`, say once a backend asked with
#: :func:`fetch` has answered.
PENDING = _Pending()

_DEFAULT_ACCEPT = Accept()
# componentize-py only reads an answer, so the commonest ones are made once.
_ACCEPTED = ConnectAnswer_Accept(_DEFAULT_ACCEPT)
_PENDING_ANSWER = ConnectAnswer_Pending()
_ANSWERS = (ConnectAnswer_Accept, ConnectAnswer_Reject, ConnectAnswer_Pending)
_TEXT = MessageKind.TEXT
# Below this many bytes a text message is decoded from a copy of its span
# (`payload[a:b].decode()`, the quickest for short messages); from it on,
# straight from a memoryview of the payload, which saves the copy.
_VIEW_FROM = 4096


def _wrap_on_connect(user_on_connect):
    """``on_connect`` as the host calls it: what the plugin's own answers
    (``None``, an :class:`Accept` or :data:`PENDING`, or a raised
    :class:`Reject`) as the contract's ``connect-answer``."""

    def on_connect(self, conn: int, req: Request):
        try:
            answer = user_on_connect(self, conn, req)
        except Reject as reject:
            return ConnectAnswer_Reject(_WitReject(status=reject.status, reason=reject.reason))
        if answer is None:
            return _ACCEPTED
        if answer is PENDING:
            return _PENDING_ANSWER
        if isinstance(answer, _WitAccept):
            return ConnectAnswer_Accept(answer)
        # An override that returns `super().on_connect(...)` hands on what a
        # wrapped method further up has already translated.
        if isinstance(answer, _ANSWERS):
            return answer
        raise TypeError(
            f"on_connect returned {type(answer).__name__}: return None, a berth.Accept "
            "or berth.PENDING, or raise berth.Reject"
        )

    return functools.wraps(user_on_connect)(on_connect)


class Plugin(exports.Handler):
    """The base of a plugin's ``Handler`` class: override the events you
    handle (see the module documentation); the others do nothing."""

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        # The host calls `on_connect` by name, so a subclass's own is wrapped
        # in place; an override need not know the contract's variant.
        user_on_connect = cls.__dict__.get("on_connect")
        if user_on_connect is not None:
            cls.on_connect = _wrap_on_connect(user_on_connect)

    @_wrap_on_connect
    def on_connect(self, conn: int, req: Request) -> Union[Accept, _Pending, None]:
        """A client asks to open connection ``conn`` with the HTTP Upgrade
        request ``req``: return ``None`` or an :class:`Accept` to accept it,
        raise :class:`Reject` to refuse it, or return :data:`PENDING` and
        call :func:`accept` or :func:`reject` later. Messages sent to
        ``conn`` now are delivered right after it opens."""
        return None

    def on_message(self, conn: int, msg: Union[str, bytes]) -> None:
        """A message arrived on ``conn``: ``str`` if text, ``bytes`` if binary."""

    def on_close(self, conn: int, code: int, reason: str) -> None:
        """``conn`` has ended with close ``code`` and ``reason``; it can no longer be sent to."""

    def on_timer(self, token: int) -> None:
        """The timer set with this ``token`` fired."""

    def on_response(self, request_id: int, result: Union[Response, FetchError]) -> None:
        """The answer to request ``request_id``, a :class:`Response` or a
        :class:`FetchError`, when it was made with no callback (see
        :func:`fetch`)."""

    def on_events(self, payload: bytes, events: list) -> None:
        """Turns the host's batch of events into one method call per event, in order."""
        view = None
        for index, event in enumerate(events):
            # Tells the host where a failure would leave the batch, so that
            # the events after a failed one are not lost.
            if index:
                _host.handling(index)
            case = event.__class__
            event = event.value
            if case is Event_Message:
                start = event.start
                end = start + event.len
                if event.kind is not _TEXT:
                    # A copy the handler owns (none if the span is all of it).
                    self.on_message(event.conn, payload[start:end])
                elif end - start < _VIEW_FROM:
                    self.on_message(event.conn, payload[start:end].decode())
                else:
                    if view is None:
                        view = memoryview(payload)
                    self.on_message(event.conn, str(view[start:end], "utf-8"))
            elif case is Event_Close:
                start = event.start
                self.on_close(event.conn, event.code, payload[start:start + event.len].decode())
            elif case is Event_Timer:
                self.on_timer(event)
            elif case is Event_Response:
                self._on_response_event(payload, event)

    def _on_response_event(self, payload: bytes, event) -> None:
        request_id = event.id
        callback = _callbacks.pop(request_id, None)
        if request_id in _cancelled:
            # Cancelled after its answer was already on its way.
            _cancelled.discard(request_id)
            return
        outcome = event.outcome
        if outcome.__class__ is Ok:
            head = outcome.value
            start = event.start
            # A slice of the batch's bytes, never a view into them, so that
            # a callback may keep the body after this call.
            body = payload[start:start + event.len]
            result = Response(request_id, head.status, head.headers, body)
        else:
            result = FetchError(request_id, outcome.value)
        if callback is None:
            self.on_response(request_id, result)
        else:
            callback(result)


# One message object per kind, refilled for each call rather than made anew:
# componentize-py reads the value during the call and keeps no reference.
_text_box = Message_Text("")
_binary_box = Message_BinaryLatin1("")


def _box(msg: Data):
    if isinstance(msg, str):
        box = _text_box
        box.value = msg
    else:
        # The string whose characters are the bytes (U+0000-U+00FF), which
        # the host turns back into the same bytes; str() takes any buffer.
        box = _binary_box
        box.value = str(msg, "latin-1")
    return box


def send(conn: int, msg: Data) -> None:
    """Queues ``msg`` for ``conn``: a ``str`` as a text message, ``bytes``,
    ``bytearray`` or ``memoryview`` as a binary one. Messages to a connection
    arrive in the order sent. Raises :class:`HostError` with a
    :class:`ConnError` if it cannot be sent (the connection is gone or
    closing, or its queue is full, in which case berth closes it). A ``str``
    must be encodable as UTF-8: one with a lone surrogate (say, from
    ``json.loads('"\\ud800"')``) fails the call as a trap would."""
    box = _box(msg)
    try:
        _host.send(conn, box)
    except Err as err:
        raise HostError("send", err.value) from None
    finally:
        box.value = ""


@dataclass(frozen=True)
class Published:
    """What :func:`publish` did: how many ``subscribers`` on this node the
    message is for, and the ``position`` (a ``str``) it was stored at in the
    topic's history, or ``None`` when the route keeps no history."""

    subscribers: int
    position: Optional[str]


def publish(
    topic: str, msg: Data, exclude: Optional[int] = None, position_at: Optional[int] = None
) -> Published:
    """Sends ``msg`` (as :func:`send` takes it) to every connection subscribed
    to ``topic`` but ``exclude``; berth does the fan-out. Returns a
    :class:`Published`. When the route keeps history and ``position_at`` is
    given, berth writes the message's position (``EPOCH-SEQ``) into it at that
    UTF-8 byte offset before storing and sending it. Raises :class:`HostError`
    with a :class:`PublishError` (``NOT_STORED`` when the route keeps history
    and the message could not be stored); a message that fails reaches nobody."""
    box = _box(msg)
    try:
        published = _host.publish(topic, box, exclude, position_at)
    except Err as err:
        raise HostError("publish", err.value) from None
    finally:
        box.value = ""
    position = published.position
    return Published(published.subscribers, None if position is None else format_position(position))


def close(conn: int, code: int = 1000, reason: str = "") -> None:
    """Starts closing ``conn`` with ``code`` and ``reason`` (cut to 123 bytes),
    after the messages already queued for it; ``on_close`` follows. Raises
    :class:`HostError` with a :class:`ConnError` (``INVALID_CODE`` for a code
    that cannot go on the wire)."""
    try:
        _host.close(conn, code, reason)
    except Err as err:
        raise HostError("close", err.value) from None


def subscribe(conn: int, topic: str, member: Optional[str] = None) -> None:
    """Subscribes ``conn`` to ``topic`` (again is the same as once) until it
    closes or :func:`unsubscribe`. With a ``member`` description (a user
    name, a JSON text; at most the route's ``max-member`` bytes) the
    connection is also one of the topic's members, which :func:`members`
    lists on every node until it leaves; a later subscribe's ``member``
    replaces the earlier one. Raises :class:`HostError` with a
    :class:`ConnError` (``TOO_LARGE`` for a topic or description too long)."""
    try:
        _host.subscribe(conn, topic, member)
    except Err as err:
        raise HostError("subscribe", err.value) from None


def unsubscribe(conn: int, topic: str) -> None:
    """Ends ``conn``'s subscription to ``topic`` (and its membership), if it
    had one. Raises
    :class:`HostError` with a :class:`ConnError`."""
    try:
        _host.unsubscribe(conn, topic)
    except Err as err:
        raise HostError("unsubscribe", err.value) from None


def set_timer(delay_ms: int, token: int = 0, *, repeat: bool = False) -> int:
    """Asks for ``on_timer(token)`` after ``delay_ms`` milliseconds (at least
    1), and then every ``delay_ms`` if ``repeat``. Returns the timer's id, for
    :func:`cancel_timer`. Raises :class:`HostError` with
    ``TimerError.TOO_MANY_TIMERS`` past 1024 live timers."""
    try:
        return _host.set_timer(delay_ms, repeat, token)
    except Err as err:
        raise HostError("set_timer", err.value) from None


def cancel_timer(timer_id: int) -> bool:
    """Stops a timer; ``False`` if it had already ended (or never existed)."""
    return _host.cancel_timer(timer_id)


def config_get(key: str, default: Optional[str] = None) -> Optional[str]:
    """The value of ``key`` in the route's ``[route.config]`` table, or ``default``."""
    value = _host.config_get(key)
    return default if value is None else value


def log(level: Union[LogLevel, str], message: str) -> None:
    """Writes ``message`` to berth's log at ``level``: a :class:`LogLevel`
    member or its name (``"error"``, ``"warn"``, ``"info"``, ``"debug"``,
    ``"trace"``). ``print`` works too: stdout and stderr go to the log."""
    if isinstance(level, str):
        level = LogLevel[level.upper()]
    _host.log(level, message)


def accept(conn: int, subprotocol: Optional[str] = None) -> None:
    """Opens ``conn``, whose ``on_connect`` returned :data:`PENDING`: the
    client gets 101 Switching Protocols, with ``subprotocol`` if given (one
    of ``req.subprotocols``), and ``on_close`` follows in time as for any
    accepted connection. Raises :class:`HostError` with
    ``ConnError.UNKNOWN_CONNECTION`` when ``conn`` no longer waits for an
    answer: it was answered already, or the client gave up or reached the
    route's ``handshake-timeout`` (then it got 503)."""
    try:
        _host.answer_connect(conn, Ok(_WitAccept(subprotocol)))
    except Err as err:
        raise HostError("accept", err.value) from None


def reject(conn: int, status: int, reason: str = "") -> None:
    """Refuses ``conn``, whose ``on_connect`` returned :data:`PENDING`: the
    client gets this HTTP ``status`` (400-599) with ``reason`` as the
    text/plain body. Raises :class:`HostError` as :func:`accept` does."""
    try:
        _host.answer_connect(conn, Err(_WitReject(status, reason)))
    except Err as err:
        raise HostError("reject", err.value) from None


class Response:
    """The answer to a :func:`fetch`: its ``status`` (an ``int``; redirects
    to granted URLs have been followed), ``headers`` (a list of ``(name,
    value)`` ``str`` pairs in arrival order, names lower-case) and ``body``
    (``bytes``). ``request_id`` is the id :func:`fetch` returned. Any status
    is a response, 404 and 500 included: check ``ok`` or ``status``."""

    __slots__ = ("request_id", "status", "headers", "body")

    def __init__(
        self, request_id: int, status: int, headers: List[Tuple[str, str]], body: bytes
    ) -> None:
        self.request_id = request_id
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def ok(self) -> bool:
        """Whether the status is a success, 200-299."""
        return 200 <= self.status < 300

    def header(self, name: str) -> Optional[str]:
        """The value of the first header named ``name``, in any case, or ``None``."""
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def text(self, errors: str = "strict") -> str:
        """The body decoded from UTF-8; ``errors`` as for ``bytes.decode``
        (``"replace"`` never raises)."""
        return self.body.decode("utf-8", errors)

    def json(self):
        """The body parsed as JSON; raises ``ValueError`` if it is not."""
        return _json.loads(self.body)

    def __repr__(self) -> str:
        return f"<berth.Response {self.status}, {len(self.body)} bytes>"


class FetchError(HostError):
    """Why a :func:`fetch` got no response. ``error`` is an
    :class:`OutboundError` member and ``kind`` its WIT name, ``str(e)``
    ``"fetch: KIND"``. :func:`fetch` raises it at once for a request refused
    before anything was sent: ``not-allowed`` (no grant in the route's
    ``allowed-outbound`` covers the URL), ``invalid-request`` or
    ``too-many-requests``; ``request_id`` is ``None`` then. A request that
    was sent and failed hands it to its callback instead (not raised, so
    that the callback can test ``isinstance(result, berth.FetchError)``):
    ``connect-failed``, ``timeout``, ``too-large``, ``failed``, or
    ``not-allowed`` for a redirect to a URL not granted; ``request_id`` is
    the id :func:`fetch` returned."""

    def __init__(self, request_id: Optional[int], error: OutboundError) -> None:
        super().__init__("fetch", error)
        self.kind = _kind(error)
        self.request_id = request_id


#: What a :func:`fetch` callback is given.
FetchResult = Union[Response, FetchError]

# Request id -> the callback its answer goes to (None: `Plugin.on_response`).
# Module state like a plugin's own: a request never outlives its instance.
_callbacks: dict = {}
# Requests cancelled after their answers were queued: those answers still
# arrive, and are dropped rather than handed to anyone.
_cancelled: set = set()


def _header_list(headers) -> List[Tuple[str, str]]:
    if headers is None:
        return []
    if isinstance(headers, Mapping):
        return list(headers.items())
    return [(name, value) for name, value in headers]


def fetch(
    url: str,
    callback: Optional[Callable[[FetchResult], None]],
    *,
    method: str = "GET",
    headers: Union[Mapping[str, str], Iterable[Tuple[str, str]], None] = None,
    body: Optional[Data] = None,
    timeout_ms: Optional[int] = None,
) -> int:
    """Sends an HTTP request to ``url`` (absolute ``http`` or ``https``, on a
    host the route's ``allowed-outbound`` grants) and returns its id at
    once; the instance goes on handling events meanwhile. When the answer
    arrives, in a later batch, ``callback(result)`` is called with a
    :class:`Response` or a :class:`FetchError`; with ``callback=None`` the
    answer goes to ``Plugin.on_response`` instead. A request that berth
    refuses before sending anything raises :class:`FetchError` here
    (``not-allowed``, ``invalid-request``, ``too-many-requests``), and its
    callback is never called; ``except berth.FetchError as e: callback(e)``
    hands both kinds of failure to one place.

    ``headers`` is a dict or a list of ``(name, value)`` pairs (``host`` and
    ``content-length`` are set by berth); ``body`` a ``str`` (sent as UTF-8)
    or bytes; ``timeout_ms`` shortens the route's ``outbound-timeout`` for
    this request. Requests end with the instance: in the ``connection``
    model, when its connection closes. componentize-py 0.25.1 never frees
    its copy of a bytes argument to a host call, so each body sent stays in
    the instance's memory (see the module documentation)."""
    if callback is not None and not callable(callback):
        raise TypeError(f"fetch callback is {type(callback).__name__}, not callable")
    request = _OutboundRequest(
        method,
        url,
        _header_list(headers),
        b"" if body is None else _value(body),
        timeout_ms,
    )
    try:
        request_id = _outbound.fetch(request)
    except Err as err:
        raise FetchError(None, err.value) from None
    # Registered after the call: the answer comes in a later on_events
    # call, never during this one.
    _callbacks[request_id] = callback
    return request_id


def cancel_fetch(request_id: int) -> bool:
    """Abandons a :func:`fetch`: berth stops waiting for its answer, and its
    callback is not called. Returns ``True`` if it was still waiting for
    one, ``False`` if its answer has been handled already (or it never
    existed)."""
    waiting = request_id in _callbacks
    _callbacks.pop(request_id, None)
    cancelled = _outbound.cancel(request_id)
    if waiting and not cancelled:
        # Its answer is already queued for this instance (perhaps later in
        # the batch being handled) and will still arrive: it is dropped then.
        _cancelled.add(request_id)
    return cancelled or waiting


_POSITION = re.compile(r"([0-9A-Fa-f]{16})-([0-9]+)")
_U64_MAX = (1 << 64) - 1


def format_position(position: Position) -> str:
    """A position's text, ``EPOCH-SEQ`` with the epoch as 16 lower-case hex
    digits: ``format_position(Position(0xA1B2C3D4E5F607, 42))`` is
    ``"00a1b2c3d4e5f607-42"``."""
    return f"{position.epoch:016x}-{position.seq}"


def parse_position(text: Optional[str]) -> Optional[Position]:
    """Reads a position's text (as :func:`format_position` writes it; the hex
    digits in either case) into a :class:`Position`. Anything else, ``None``
    included, is ``None``, so that a malformed ``?since=`` reads as no
    position at all."""
    if not isinstance(text, str):
        return None
    parts = _POSITION.fullmatch(text)
    if parts is None:
        return None
    seq = int(parts[2])
    return None if seq > _U64_MAX else Position(int(parts[1], 16), seq)


@dataclass(frozen=True)
class Kept:
    """A message kept in a topic's history: its ``position`` (a ``str``), its
    sequence number ``seq`` in the history's epoch, and ``data``, a ``str``
    for a text message and ``bytes`` for a binary one."""

    position: str
    seq: int
    data: Union[str, bytes]


@dataclass(frozen=True)
class HistoryPage:
    """What :func:`history` found: the history's ``epoch``, the ``messages``
    (a list of :class:`Kept`, oldest first), and ``last``, the position of
    the topic's newest message (``None`` when it keeps none). When ``last``
    is past the last of ``messages``, more follow."""

    epoch: int
    last: Optional[str]
    messages: List[Kept]


def history(topic: str, since: Union[str, Position, None] = None, limit: int = 100) -> HistoryPage:
    """The messages of ``topic`` published after ``since``, oldest first, at
    most ``limit`` (at most 1,000); without ``since``, the newest ``limit``.
    ``since`` is a position ``str`` (a malformed one raises ``ValueError``:
    read clients' text with :func:`parse_position`) or a :class:`Position`.

    Raises :class:`HostError` with a :class:`HistoryError`: ``LOST`` when
    the messages after ``since`` are no longer all kept (the client has
    missed some and must start over), ``DISABLED`` when the route keeps no
    history (``history-size = 0``), ``TOO_LARGE`` for a topic name over
    ``max-topic-name``, ``UNAVAILABLE`` when the store did not answer."""
    if isinstance(since, str):
        position = parse_position(since)
        if position is None:
            raise ValueError(f"not a position: {since!r}")
        since = position
    try:
        page = _state.history(topic, since, limit)
    except Err as err:
        raise HostError("history", err.value) from None
    epoch = f"{page.epoch:016x}-"
    messages = [
        Kept(
            f"{epoch}{kept.seq}",
            kept.seq,
            kept.data.decode() if kept.kind is _TEXT else kept.data,
        )
        for kept in page.messages
    ]
    return HistoryPage(page.epoch, f"{epoch}{page.last}" if page.last else None, messages)


def members(topic: str, limit: int = 1000) -> List[Member]:
    """The members of ``topic`` on every node, at most ``limit`` (at most
    1,000), in no particular order: each a :class:`Member` with ``conn`` (its
    connection id, unique on its node), ``node`` (the node's id, ``"local"``
    without a broker) and ``info`` (the description given to
    :func:`subscribe`). Raises :class:`HostError` with a :class:`StateError`."""
    try:
        return _state.members(topic, limit)
    except Err as err:
        raise HostError("members", err.value) from None


def count_members(topic: str) -> int:
    """How many members ``topic`` has on every node. Raises
    :class:`HostError` with a :class:`StateError`."""
    try:
        return _state.count_members(topic)
    except Err as err:
        raise HostError("count_members", err.value) from None


def _value(value: Data) -> bytes:
    """A value to store: a ``str`` as its UTF-8 bytes, bytes as they are."""
    if isinstance(value, str):
        return value.encode()
    return value if type(value) is bytes else bytes(value)


def _optional_value(value: Optional[Data]) -> Optional[bytes]:
    return None if value is None else _value(value)


class Store:
    """The namespace's key-value store, shared by every instance of the
    routes in the namespace (and every node, with a broker); use the one
    instance, ``berth.store``. Keys are ``str`` (at most 256 bytes); a value
    is at most 64 KiB, given as a ``str`` (stored as its UTF-8 bytes) or a
    bytes-like object. ``ttl_ms``, where taken, is a time to live in
    milliseconds, or ``None`` for none. A call that does not take effect
    raises :class:`HostError` with a :class:`StateError`: ``TOO_LARGE``,
    ``QUOTA`` (the namespace's ``store-keys`` or ``store-bytes`` would be
    passed; nothing was written), ``NOT_A_NUMBER`` (:meth:`increment`) or
    ``UNAVAILABLE``."""

    __slots__ = ()

    def get(self, key: str) -> Optional[bytes]:
        """The value of ``key``, or ``None`` if it has none."""
        try:
            return _state.get(key)
        except Err as err:
            raise HostError("store.get", err.value) from None

    def get_text(self, key: str) -> Optional[str]:
        """The value of ``key`` decoded from UTF-8, or ``None`` if it has
        none. Raises ``UnicodeDecodeError`` if the value is not UTF-8."""
        value = self.get(key)
        return None if value is None else value.decode()

    def set(self, key: str, value: Data, ttl_ms: Optional[int] = None) -> None:
        """Stores ``value`` under ``key``, for ``ttl_ms`` milliseconds if given."""
        try:
            _state.set(key, _value(value), ttl_ms)
        except Err as err:
            raise HostError("store.set", err.value) from None

    def delete(self, key: str) -> bool:
        """Removes ``key``; ``True`` if it had a value."""
        try:
            return _state.delete(key)
        except Err as err:
            raise HostError("store.delete", err.value) from None

    def increment(self, key: str, delta: int = 1) -> int:
        """Adds ``delta`` to the decimal integer stored under ``key`` (an
        absent key counts as 0) and returns the sum, a signed 64-bit integer
        (``NOT_A_NUMBER`` if the value is not one, or the sum overflows).
        A time to live the key had is kept."""
        try:
            return _state.increment(key, delta)
        except Err as err:
            raise HostError("store.increment", err.value) from None

    def compare_and_set(
        self,
        key: str,
        expected: Optional[Data],
        value: Optional[Data],
        ttl_ms: Optional[int] = None,
    ) -> bool:
        """Sets ``key`` to ``value`` (removes it, when ``value`` is ``None``)
        only if its value now is ``expected`` (``None``: only if it is
        absent); ``True`` if it did. Values compare as bytes, so a ``str``
        compares as its UTF-8 bytes."""
        try:
            return _state.compare_and_set(key, _optional_value(expected), _optional_value(value), ttl_ms)
        except Err as err:
            raise HostError("store.compare_and_set", err.value) from None


#: The namespace's key-value store: ``berth.store.get(key)`` and so on (see
#: :class:`Store`).
store = Store()


def query_param(req: Request, name: str) -> Optional[str]:
    """The value of the first ``name=value`` pair of ``req``'s query, as sent
    (not percent-decoded); parts without ``=`` are skipped."""
    if req.query is None:
        return None
    for pair in req.query.split("&"):
        key, eq, value = pair.partition("=")
        if eq and key == name:
            return value
    return None


def header(req: Request, name: str) -> Optional[str]:
    """The value of ``req``'s first header named ``name``, in any case (berth
    gives header names lower-case)."""
    name = name.lower()
    for key, value in req.headers:
        if key == name:
            return value
    return None
