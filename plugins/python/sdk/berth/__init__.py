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
  HTTP status.
- ``on_message(self, conn, msg)``: a message arrived; ``msg`` is a ``str`` for
  a text message and ``bytes`` for a binary one.
- ``on_close(self, conn, code, reason)``: the connection has ended, with this
  close code (an ``int``) and reason (a ``str``, often empty). Called exactly
  once for every accepted connection, after its last message.
- ``on_timer(self, token)``: a timer set with :func:`set_timer` fired.

The host calls: :func:`send`, :func:`publish`, :func:`close`,
:func:`subscribe`, :func:`unsubscribe`, :func:`set_timer`,
:func:`cancel_timer`, :func:`config_get` and :func:`log`. A ``str`` message
goes out as text, ``bytes``, ``bytearray`` or ``memoryview`` as binary. A call
that does not take effect raises :class:`HostError`, whose ``error`` says why
(a :class:`ConnError`, :class:`PublishError` or :class:`TimerError` member).

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
strings, so this way sending binary data keeps no memory.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional, Union

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host as _host
from wit_world.imports.types import (
    ConnError,
    Event_Close,
    Event_Message,
    LogLevel,
    Message_BinaryLatin1,
    Message_Text,
    MessageKind,
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
    "HostError",
    "LogLevel",
    "Plugin",
    "PublishError",
    "Reject",
    "Request",
    "TimerError",
    "cancel_timer",
    "close",
    "config_get",
    "header",
    "log",
    "publish",
    "query_param",
    "send",
    "set_timer",
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


class HostError(Exception):
    """A host call did not take effect. ``error`` says why: a
    :class:`ConnError` member (``send``, ``close``, ``subscribe``,
    ``unsubscribe``), a :class:`PublishError` one (``publish``) or a
    :class:`TimerError` one (``set_timer``)."""

    def __init__(self, call: str, error: Union[ConnError, PublishError, TimerError]) -> None:
        super().__init__(f"{call}: {error.name.lower().replace('_', '-')}")
        self.error = error


_DEFAULT_ACCEPT = Accept()
_TEXT = MessageKind.TEXT
# Below this many bytes a text message is decoded from a copy of its span
# (`payload[a:b].decode()`, the quickest for short messages); from it on,
# straight from a memoryview of the payload, which saves the copy.
_VIEW_FROM = 4096


def _wrap_on_connect(user_on_connect):
    """``on_connect`` as the host calls it: ``None`` becomes the default
    accept, and :class:`Reject` the ``Err(Reject)`` componentize-py answers
    the upgrade with (it takes ``Err`` itself, not a subclass)."""

    def on_connect(self, conn: int, req: Request) -> _WitAccept:
        try:
            accept = user_on_connect(self, conn, req)
        except Reject as reject:
            raise Err(_WitReject(status=reject.status, reason=reject.reason)) from None
        if accept is None:
            return _DEFAULT_ACCEPT
        if not isinstance(accept, _WitAccept):
            raise TypeError(
                f"on_connect returned {type(accept).__name__}: return None or a berth.Accept, "
                "or raise berth.Reject"
            )
        return accept

    return functools.wraps(user_on_connect)(on_connect)


class Plugin(exports.Handler):
    """The base of a plugin's ``Handler`` class: override the events you
    handle (see the module documentation); the others do nothing."""

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        # The host calls `on_connect` by name, so a subclass's own is wrapped
        # in place; an override need not know about componentize-py's `Err`.
        user_on_connect = cls.__dict__.get("on_connect")
        if user_on_connect is not None:
            cls.on_connect = _wrap_on_connect(user_on_connect)

    def on_connect(self, conn: int, req: Request) -> Optional[Accept]:
        """A client asks to open connection ``conn`` with the HTTP Upgrade
        request ``req``: return ``None`` or an :class:`Accept` to accept it,
        raise :class:`Reject` to refuse it. Messages sent to ``conn`` now are
        delivered right after it opens."""
        return _DEFAULT_ACCEPT

    def on_message(self, conn: int, msg: Union[str, bytes]) -> None:
        """A message arrived on ``conn``: ``str`` if text, ``bytes`` if binary."""

    def on_close(self, conn: int, code: int, reason: str) -> None:
        """``conn`` has ended with close ``code`` and ``reason``; it can no longer be sent to."""

    def on_timer(self, token: int) -> None:
        """The timer set with this ``token`` fired."""

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
            else:
                self.on_timer(event)


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


def publish(topic: str, msg: Data, exclude: Optional[int] = None) -> int:
    """Sends ``msg`` (as :func:`send` takes it) to every connection subscribed
    to ``topic`` but ``exclude``; berth does the fan-out. Returns how many
    connections it is for."""
    box = _box(msg)
    try:
        return _host.publish(topic, box, exclude)
    except Err as err:
        raise HostError("publish", err.value) from None
    finally:
        box.value = ""


def close(conn: int, code: int = 1000, reason: str = "") -> None:
    """Starts closing ``conn`` with ``code`` and ``reason`` (cut to 123 bytes),
    after the messages already queued for it; ``on_close`` follows. Raises
    :class:`HostError` with a :class:`ConnError` (``INVALID_CODE`` for a code
    that cannot go on the wire)."""
    try:
        _host.close(conn, code, reason)
    except Err as err:
        raise HostError("close", err.value) from None


def subscribe(conn: int, topic: str) -> None:
    """Subscribes ``conn`` to ``topic`` (again is the same as once) until it
    closes or :func:`unsubscribe`. Raises :class:`HostError` with a
    :class:`ConnError`."""
    try:
        _host.subscribe(conn, topic)
    except Err as err:
        raise HostError("subscribe", err.value) from None


def unsubscribe(conn: int, topic: str) -> None:
    """Ends ``conn``'s subscription to ``topic``, if it had one. Raises
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
