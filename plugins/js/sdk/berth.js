// berth's plugin SDK for JavaScript (componentize-js), for berth:plugin@0.5.0.
//
// A plugin hands its hooks to `plugin` and exports the result as `handler`:
//
//     import { plugin, send } from './berth.js';
//
//     export const handler = plugin({
//       onMessage(conn, msg) {
//         try {
//           send(conn, msg);
//         } catch {
//           // The client is gone or too slow; the host closes it itself.
//         }
//       },
//     });
//
// Every hook is optional; hooks are called as plain functions, not methods.
//
//   onConnect(conn, req)  A client asks to open a connection. `req` is
//       { path, query, headers, remoteAddr, subprotocols }: `query` is a
//       string or undefined, `headers` an array of [name, value] pairs with
//       lower-case names. Return undefined to accept, or an accept record
//       { subprotocol } naming one of `req.subprotocols`. Throw a plain object
//       { status, reason } (not an Error) to refuse with that HTTP status
//       (400-599) and `reason` as the body. Anything else thrown (an Error, a
//       failed host call's exception, a string) is a fault: the instance
//       traps. Without the hook every connection is accepted.
//       The hook may also return a Promise (be an `async` function), to
//       decide once a backend has answered: the client waits meanwhile (up
//       to the route's `handshake-timeout`, then it gets 503), and no
//       messages arrive from it. The promise's value accepts as above; its
//       rejection with a plain { status, reason } refuses; any other
//       rejection refuses with 500 'plugin failed' and logs the error.
//   onMessage(conn, msg)  A complete message arrived: `msg` is a string for a
//       text message and a Uint8Array for a binary one.
//   onClose(conn, { code, reason })  The connection has ended (once for each
//       accepted connection, after its last message); it can no longer be
//       sent to.
//   onTimer(token)  A timer set with `setTimer` fired; `token` is the BigInt
//       given then.
//
// onMessage, onClose and onTimer may be `async` too. An exception that
// escapes a hook synchronously traps the instance; one that rejects its
// promise later is logged, and the instance lives on.
//
// Outbound HTTP: `fetch(url, init)`, exported here and installed as
// `globalThis.fetch`, works as in browsers and Node.js, for the backends the
// route was granted (`allowed-outbound`). It resolves to a Response with
// `status`, `ok`, `headers` (`get(name)` in any case; iterable) and the body
// through `text()`, `json()`, `arrayBuffer()` and `bytes()`; it rejects with
// a FetchError whose `kind` is the WIT `outbound-error` case ('not-allowed',
// 'invalid-request', 'too-many-requests', 'connect-failed', 'timeout',
// 'too-large', 'failed'). See `fetch` below for `init`.
//
// A request never blocks the instance: its answer arrives in a later batch
// of events, which settles its promise. The code after an `await fetch(...)`
// runs during that batch's call, after the batch's events have been handed
// to the hooks (the engine runs every pending promise continuation before a
// call returns to the host), so it may call the host as any hook does
// (`send`, `publish`, `store`...). Other events may have been handled in
// between, as anywhere else in JavaScript. JavaScript's own timers
// (setTimeout, setInterval) are no way to wait: the engine fires them only
// while a call is still under way, never between calls. Use `setTimer`.
//
// Connection ids, timer ids and timer tokens are u64 and arrive as BigInt,
// as do the other 64-bit numbers (history epochs and sequence numbers, the
// sums `store.increment` returns); 32-bit ones are plain numbers.
//
// A binary `msg` is a view into the buffer that carries the whole batch of
// events the host delivered, and that buffer is detached (emptied) once the
// batch has been handled, so that large messages are freed at once instead of
// piling up until the garbage collector runs. The view is valid during the
// call only, and in an async hook only until its first `await`: keep a copy
// with `msg.slice()` to use the bytes later. Strings (text messages, close
// reasons) and response bodies are copies and stay valid.
//
// The host functions below take JavaScript values. A message to send is a
// string (sent as a text message) or a Uint8Array, another ArrayBuffer view or
// an ArrayBuffer (sent as a binary message); a message variant as the WIT
// spells it, { tag: 'text' | 'text-utf8' | 'binary' | 'binary-latin1', val },
// is passed on as it is. Strings are sent as UTF-8 bytes encoded natively,
// which costs far less than passing them as WIT strings.
//
// A host call that fails throws, as componentize-js's bindings do, an Error
// whose `payload` (and message) is the WIT error case: 'unknown-connection',
// 'closing', 'queue-full', 'invalid-code', 'invalid-message', 'too-large' or
// 'too-many-subscriptions' (send, close, subscribe, unsubscribe),
// 'invalid-message', 'too-large' or 'not-stored' (publish), 'too-many-timers'
// (setTimer), 'lost', 'disabled', 'too-large' or 'unavailable' (history),
// 'too-large', 'quota', 'not-a-number' or 'unavailable' (members,
// countMembers and the `store` calls). The bindings run in a realm of their
// own, so `e instanceof Error` is false for it: look at `e.payload`. A failed
// send usually means the client is gone or too slow to read, and the host
// closes it by itself. An exception a hook lets escape traps the instance,
// and the rest of its batch is lost with it.
//
// State that outlives the instance (berth keeps it per namespace, on disk or
// in Redis, so every instance and every node sees the same):
//
//   history(topic, since, limit)  A topic's stored messages, when the route
//       keeps history (`history-size`); `publish` answers with where it
//       stored each one.
//   members(topic, limit), countMembers(topic)  The connections that
//       subscribed to `topic` with a member description, on every node.
//   store.get, store.getText, store.set, store.delete, store.increment,
//       store.compareAndSet  A key-value store.
//
// A position in a topic's history is a string, `EPOCH-SEQ` with the epoch as
// 16 lower-case hex digits and the sequence number in decimal
// ('00a1b2c3d4e5f607-42'), the same text the Rust SDK writes: hand it to
// clients as it is, and read what they send back with `parsePosition`.

import {
  send as hostSend,
  close as hostClose,
  publish as hostPublish,
  setTimer as hostSetTimer,
  subscribe as hostSubscribe,
  unsubscribe,
  cancelTimer,
  configGet,
  log,
  answerConnect,
  handling,
} from 'berth:plugin/host@0.5.0';
import {
  history as stateHistory,
  members as stateMembers,
  countMembers as stateCountMembers,
  get as stateGet,
  set as stateSet,
  delete as stateDelete,
  increment as stateIncrement,
  compareAndSet as stateCompareAndSet,
} from 'berth:plugin/state@0.5.0';
import { fetch as outboundFetch, cancel as outboundCancel } from 'berth:plugin/outbound@0.5.0';

// Native codecs, made once. The host has checked that text is UTF-8; a
// leading byte order mark is kept, as it arrived.
const decoder = new TextDecoder('utf-8', { ignoreBOM: true });
const encoder = new TextEncoder();
// For stored values, which nobody checked.
const strictDecoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

const ACCEPT = Object.freeze({ subprotocol: undefined });

const CAN_DETACH = typeof ArrayBuffer.prototype.transfer === 'function';

const toStringTag = (value) => Object.prototype.toString.call(value);

function toMessage(msg) {
  if (typeof msg === 'string') {
    return { tag: 'text-utf8', val: encoder.encode(msg) };
  }
  // Both checks hold across realms (see onEvents).
  if (ArrayBuffer.isView(msg) || toStringTag(msg) === '[object ArrayBuffer]') {
    return { tag: 'binary', val: msg };
  }
  if (msg !== null && typeof msg === 'object' && typeof msg.tag === 'string') {
    return msg;
  }
  throw new TypeError('a message is a string, an ArrayBuffer or an ArrayBuffer view');
}

/**
 * Queues `msg` for `conn`: a string as a text message, bytes as a binary one.
 * Throws if the host refuses it (see above).
 */
export function send(conn, msg) {
  hostSend(conn, toMessage(msg));
}

/**
 * Sends `msg` to every connection subscribed to `topic` but `exclude` (a
 * connection id, or undefined for none). Returns { subscribers, position }:
 * how many subscribers on this node it is for (a number), and where it was
 * stored in the topic's history (a position string), or null when the route
 * keeps no history. Throws 'not-stored' when the route keeps history and the
 * message could not be stored; it then reached nobody. With `positionAt` (a
 * UTF-8 byte offset into the message), the host writes the message's
 * position ('EPOCH-SEQ') into it there before storing and sending it, when
 * the route keeps history.
 */
export function publish(topic, msg, exclude, positionAt) {
  const at = positionAt == null ? undefined : positionAt;
  const { subscribers, position } = hostPublish(topic, toMessage(msg), exclude, at);
  return { subscribers, position: position == null ? null : formatPosition(position) };
}

/**
 * Subscribes `conn` to `topic` until it closes or unsubscribes (again is the
 * same as once). With a `member` description (a string: a user name, a JSON
 * text; at most the route's `max-member` bytes) the connection is also one of
 * the topic's members, which `members` lists on every node until it leaves;
 * undefined or null subscribes it without. A later subscribe's `member`
 * replaces the earlier one.
 */
export function subscribe(conn, topic, member) {
  hostSubscribe(conn, topic, member ?? undefined);
}

/** Starts closing `conn` with a close frame carrying `code` and `reason`. */
export function close(conn, code = 1000, reason = '') {
  hostClose(conn, code, reason);
}

/**
 * Asks for `onTimer(token)` after `delayMs` milliseconds (at least 1), and
 * then every `delayMs` if `repeat`; returns the timer's id (a BigInt) for
 * `cancelTimer`. `token` is a BigInt or a non-negative integer.
 */
export function setTimer(delayMs, repeat = false, token = 0n) {
  return hostSetTimer(delayMs, repeat, token);
}

// unsubscribe(conn, topic): ends a subscription (and membership) made with
// `subscribe`; subscriptions also end with the connection.
// cancelTimer(id) -> boolean: false if the timer had already ended.
// configGet(key) -> string or undefined: a value of the route's
// [route.config] table. log(level, message): a line in the host's log,
// `level` one of 'trace', 'debug', 'info', 'warn' and 'error'.
export { unsubscribe, cancelTimer, configGet, log };

const U64_MAX = 0xffff_ffff_ffff_ffffn;
const I64_MAX = 0x7fff_ffff_ffff_ffffn;
const POSITION = /^([0-9A-Fa-f]{16})-([0-9]+)$/;

/**
 * A position's text, `EPOCH-SEQ` with the epoch as 16 lower-case hex digits:
 * formatPosition({ epoch: 0xa1b2c3d4e5f607n, seq: 42n }) is
 * '00a1b2c3d4e5f607-42'. `epoch` and `seq` are BigInts or non-negative
 * integers.
 */
export function formatPosition({ epoch, seq }) {
  return `${BigInt(epoch).toString(16).padStart(16, '0')}-${BigInt(seq)}`;
}

/**
 * Reads a position's text (as `formatPosition` writes it; the hex digits in
 * either case) into { epoch, seq }, both BigInts. Anything else, a
 * non-string included, is null, so that a malformed `?since=` reads as no
 * position at all.
 */
export function parsePosition(text) {
  if (typeof text !== 'string') {
    return null;
  }
  const parts = POSITION.exec(text);
  if (parts === null) {
    return null;
  }
  const seq = BigInt(parts[2]);
  return seq > U64_MAX ? null : { epoch: BigInt(`0x${parts[1]}`), seq };
}

// A `since` as the host takes it: undefined for none.
function sincePosition(since) {
  if (since === undefined || since === null) {
    return undefined;
  }
  if (typeof since !== 'string') {
    return since;
  }
  const position = parsePosition(since);
  if (position === null) {
    throw new TypeError(`not a position: ${JSON.stringify(since)}`);
  }
  return position;
}

// The plugin realm's view of bytes the bindings made (see onEvents).
const ownBytes = (data) => new Uint8Array(data.buffer, data.byteOffset, data.byteLength);

/**
 * The messages of `topic` published after `since`, oldest first, at most
 * `limit` (at most 1,000); without `since` (undefined or null), the newest
 * `limit`. `since` is a position string (a malformed one throws a
 * TypeError: read clients' text with `parsePosition`) or what
 * `parsePosition` returns.
 *
 * Returns { epoch, last, messages }: `epoch` the history's epoch (a BigInt);
 * `last` the position of the topic's newest message, or null when it keeps
 * none (when `last` is past the last of `messages`, more follow); each
 * message { position, seq, data }, `position` its position string, `seq` its
 * sequence number (a BigInt), `data` a string for a text message and a
 * Uint8Array (a copy, kept as long as wanted) for a binary one.
 *
 * Throws 'lost' when the messages after `since` are no longer all kept (the
 * client has missed some and must start over), 'disabled' when the route
 * keeps no history (`history-size = 0`), 'too-large' for a topic name over
 * `max-topic-name`, 'unavailable' when the store did not answer.
 */
export function history(topic, since, limit = 100) {
  const page = stateHistory(topic, sincePosition(since), limit);
  const epoch = page.epoch;
  const hex = epoch.toString(16).padStart(16, '0');
  const messages = Array.from(page.messages, ({ seq, kind, data }) => ({
    position: `${hex}-${seq}`,
    seq,
    data: kind === 'text' ? decoder.decode(ownBytes(data)) : ownBytes(data),
  }));
  return { epoch, last: page.last === 0n ? null : `${hex}-${page.last}`, messages };
}

/**
 * The members of `topic` on every node, at most `limit` (at most 1,000), in
 * no particular order: an array of { conn, node, info }, `conn` the
 * connection id (a BigInt, unique on its node), `node` the node's id ('local'
 * without a broker) and `info` the description given to `subscribe`.
 */
export function members(topic, limit = 1000) {
  return stateMembers(topic, limit);
}

/** How many members `topic` has on every node (a number). */
export function countMembers(topic) {
  return stateCountMembers(topic);
}

// A value to store: a string as its UTF-8 bytes, bytes as they are.
function toValue(value) {
  if (typeof value === 'string') {
    return encoder.encode(value);
  }
  if (ArrayBuffer.isView(value) || toStringTag(value) === '[object ArrayBuffer]') {
    return value;
  }
  throw new TypeError('a stored value is a string, an ArrayBuffer or an ArrayBuffer view');
}

const toOptionalValue = (value) => (value === undefined || value === null ? undefined : toValue(value));

/**
 * The namespace's key-value store, shared by every instance of the routes
 * in the namespace (and every node, with a broker). Keys are strings (at
 * most 256 bytes); a value is bytes (at most 64 KiB), given as a string
 * (stored as its UTF-8 bytes), a Uint8Array, another ArrayBuffer view or an
 * ArrayBuffer. `ttlMs`, where taken, is a time to live in milliseconds (a
 * number or a BigInt), or undefined or null for none. A failed call throws
 * 'too-large', 'quota' (the namespace's `store-keys` or `store-bytes` would
 * be passed; nothing was written), 'not-a-number' (increment) or
 * 'unavailable'.
 */
export const store = Object.freeze({
  /** The value of `key` as a Uint8Array, or null if it has none. */
  get(key) {
    const value = stateGet(key);
    return value == null ? null : ownBytes(value);
  },

  /**
   * The value of `key` decoded from UTF-8, or null if it has none. Throws a
   * TypeError if the value is not UTF-8.
   */
  getText(key) {
    const value = stateGet(key);
    return value == null ? null : strictDecoder.decode(ownBytes(value));
  },

  /** Stores `value` under `key`, for `ttlMs` milliseconds if given. */
  set(key, value, ttlMs) {
    stateSet(key, toValue(value), ttlMs ?? undefined);
  },

  /** Removes `key`; true if it had a value. */
  delete(key) {
    return stateDelete(key);
  },

  /**
   * Adds `delta` (a BigInt or an integer, 0 or more) to the decimal integer
   * stored under `key`, an absent key counting as 0, and returns the sum. The
   * value is a signed 64-bit integer, so the sum is a BigInt, as the SDK's
   * other 64-bit numbers are: `Number(sum)` is exact up to 2^53.
   *
   * A negative `delta` throws a RangeError: componentize-js 0.23.0 cannot
   * pass a negative 64-bit integer to the host (its embedding aborts the
   * instance on one; ComponentizeJS#343), so this SDK cannot decrement.
   */
  increment(key, delta = 1) {
    const n = BigInt(delta);
    if (n < 0n || n > I64_MAX) {
      throw new RangeError(`increment takes a delta from 0 to 2^63 - 1, not ${n}`);
    }
    return stateIncrement(key, n);
  },

  /**
   * Sets `key` to `value` (removes it, when `value` is undefined or null)
   * only if its value now is `expected` (undefined or null: only if it is
   * absent); true if it did. Values compare as bytes, so a string compares
   * as its UTF-8 bytes.
   */
  compareAndSet(key, expected, value, ttlMs) {
    return stateCompareAndSet(key, toOptionalValue(expected), toOptionalValue(value), ttlMs ?? undefined);
  },
});

// Outbound HTTP. The host answers a request in a later `on-events` call, so
// each request waits here, under its id, for its `response` event.
const requests = new Map();

// For response bodies, as `fetch`'s Response decodes them: a leading byte
// order mark is dropped, and bytes that are not UTF-8 become U+FFFD.
const bodyDecoder = new TextDecoder('utf-8');

/**
 * Why an outbound request has no response: `kind` (also the message) is
 * the WIT `outbound-error` case, 'not-allowed', 'invalid-request',
 * 'too-many-requests', 'connect-failed', 'timeout', 'too-large' or 'failed'.
 */
export class FetchError extends Error {
  constructor(kind) {
    super(kind);
    this.name = 'FetchError';
    this.kind = kind;
  }
}

/**
 * A response's headers, as the host gave them: names in lower case, in
 * arrival order. `get` looks a name up in any case and joins repeated
 * headers with ', ', as the Fetch standard's Headers does; iterating yields
 * each [name, value] pair as it arrived (repeats apart).
 */
export class ResponseHeaders {
  #pairs;

  constructor(pairs) {
    this.#pairs = pairs;
  }

  /** The value of `name`, or null if the response has no such header. */
  get(name) {
    const wanted = String(name).toLowerCase();
    let value = null;
    for (const [n, v] of this.#pairs) {
      if (n === wanted) {
        value = value === null ? v : `${value}, ${v}`;
      }
    }
    return value;
  }

  /** Whether the response has a header `name` (in any case). */
  has(name) {
    const wanted = String(name).toLowerCase();
    return this.#pairs.some(([n]) => n === wanted);
  }

  forEach(callback, thisArg) {
    for (const [n, v] of this.#pairs) {
      callback.call(thisArg, v, n, this);
    }
  }

  *entries() {
    for (const [n, v] of this.#pairs) {
      yield [n, v];
    }
  }

  *keys() {
    for (const [n] of this.#pairs) {
      yield n;
    }
  }

  *values() {
    for (const [, v] of this.#pairs) {
      yield v;
    }
  }

  [Symbol.iterator]() {
    return this.entries();
  }
}

/**
 * What `fetch` resolves to: `status`, `ok` (a 2xx status), `headers` (a
 * ResponseHeaders) and the body, read with `text()`, `json()`,
 * `arrayBuffer()` or `bytes()`. The body is held in full (the route's
 * `outbound-body-bytes` bounds it) and may be read more than once; each
 * read gives a copy of its own.
 */
export class Response {
  #body;

  constructor(status, headers, body) {
    this.status = status;
    this.headers = new ResponseHeaders(headers);
    this.#body = body;
  }

  get ok() {
    return this.status >= 200 && this.status <= 299;
  }

  /** The body decoded from UTF-8. */
  async text() {
    return bodyDecoder.decode(this.#body);
  }

  /** The body parsed as JSON; rejects with a SyntaxError if it is not JSON. */
  async json() {
    return JSON.parse(bodyDecoder.decode(this.#body));
  }

  /** The body's bytes, as an ArrayBuffer. */
  async arrayBuffer() {
    return this.#body.slice().buffer;
  }

  /** The body's bytes, as a Uint8Array. */
  async bytes() {
    return this.#body.slice();
  }
}

// The Fetch standard upper-cases these methods however they are written,
// and passes every other method on as it is.
const NORMALIZED_METHODS = new Set(['DELETE', 'GET', 'HEAD', 'OPTIONS', 'POST', 'PUT']);

function requestMethod(method) {
  if (method === undefined || method === null) {
    return 'GET';
  }
  const text = String(method);
  const upper = text.toUpperCase();
  return NORMALIZED_METHODS.has(upper) ? upper : text;
}

// Request headers as the host takes them, [name, value] pairs, from an
// array of pairs, anything iterable over pairs (a Headers, a Map), or a
// plain object.
function requestHeaders(headers) {
  if (headers === undefined || headers === null) {
    return [];
  }
  if (typeof headers !== 'object') {
    throw new TypeError('fetch: headers are an object, an array of [name, value] pairs or a Headers');
  }
  const entries = typeof headers[Symbol.iterator] === 'function' ? headers : Object.entries(headers);
  const pairs = [];
  for (const pair of entries) {
    if (pair === null || typeof pair !== 'object' || pair.length !== 2) {
      throw new TypeError('fetch: each header is a [name, value] pair');
    }
    pairs.push([String(pair[0]), String(pair[1])]);
  }
  return pairs;
}

const hasHeader = (pairs, name) => pairs.some(([n]) => n.toLowerCase() === name);

function requestBody(body) {
  if (body === undefined || body === null) {
    return new Uint8Array(0);
  }
  if (typeof body === 'string') {
    return encoder.encode(body);
  }
  if (ArrayBuffer.isView(body)) {
    return new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
  }
  if (toStringTag(body) === '[object ArrayBuffer]') {
    return new Uint8Array(body);
  }
  throw new TypeError('fetch: a body is a string, an ArrayBuffer or an ArrayBuffer view');
}

function requestTimeout(timeout) {
  if (timeout === undefined || timeout === null) {
    return undefined;
  }
  const ms = Number(timeout);
  if (!(ms >= 0)) {
    throw new TypeError(`fetch: timeout is a number of milliseconds, 0 or more, not ${timeout}`);
  }
  // The host caps it at the route's `outbound-timeout` anyway.
  return Math.min(Math.ceil(ms), 0xffff_ffff);
}

function startFetch(input, init) {
  const url = String(input);
  const { method, headers, body, timeout, signal } = init ?? {};
  signal?.throwIfAborted?.();
  const pairs = requestHeaders(headers);
  // As the Fetch standard does, so that a server reading a string body
  // knows its charset.
  if (typeof body === 'string' && !hasHeader(pairs, 'content-type')) {
    pairs.push(['content-type', 'text/plain;charset=UTF-8']);
  }
  const request = {
    method: requestMethod(method),
    url,
    headers: pairs,
    body: requestBody(body),
    timeoutMs: requestTimeout(timeout),
  };
  return new Promise((resolve, reject) => {
    let id;
    try {
      id = outboundFetch(request);
    } catch (e) {
      // Refused before anything was sent ('not-allowed', 'invalid-request',
      // 'too-many-requests'): rejected as a refusal that arrives as an
      // event would be, so that callers handle both alike.
      reject(typeof e?.payload === 'string' ? new FetchError(e.payload) : e);
      return;
    }
    const waiter = { resolve, reject, done: undefined };
    requests.set(id, waiter);
    if (typeof signal?.addEventListener === 'function') {
      const abort = () => {
        // No response event follows a cancelled request, so the promise is
        // settled here; if the answer is already queued, it finds no waiter.
        requests.delete(id);
        outboundCancel(id);
        reject(signal.reason);
      };
      signal.addEventListener('abort', abort, { once: true });
      // A signal may outlive many requests: each lets go of it once answered.
      waiter.done = () => signal.removeEventListener('abort', abort);
    }
  });
}

/**
 * Sends an HTTP request to one of the backends the route was granted
 * (`allowed-outbound`), the way the global `fetch` of browsers and Node.js
 * does, and returns a Promise of its Response. The SDK also installs it as
 * `globalThis.fetch`.
 *
 * `input` is an absolute http or https URL (a string, or anything whose
 * string is one, such as a URL). `init` may hold `method` ('GET' when
 * absent), `headers` (a plain object, an array of [name, value] pairs or a
 * Headers), `body` (a string, sent as UTF-8 with `content-type:
 * text/plain;charset=UTF-8` unless a content type is given, an ArrayBuffer
 * or an ArrayBuffer view), `timeout` (milliseconds for the whole response;
 * the route's `outbound-timeout` when absent or longer) and `signal` (an
 * AbortSignal that cancels the request and rejects with its reason).
 *
 * The Promise rejects with a FetchError whose `kind` is why there is no
 * response, and with a TypeError for arguments it cannot send. A request
 * that berth refuses before sending anything (no grant covers the URL, a
 * malformed request, too many in flight) rejects before the call that made
 * it returns; the others settle in a later call. A response of any status
 * resolves it: look at `ok` or `status`.
 */
export function fetch(input, init) {
  try {
    return startFetch(input, init);
  } catch (e) {
    return Promise.reject(e);
  }
}

globalThis.fetch = fetch;

// Settles the request a response event answers. The body is copied out of
// the batch's payload, whose buffer is detached once the batch is handled.
function deliverResponse(bytes, { id, outcome, start, len }) {
  const waiter = requests.get(id);
  if (waiter === undefined) {
    return;
  }
  requests.delete(id);
  waiter.done?.();
  if (outcome.tag === 'ok') {
    const { status, headers } = outcome.val;
    waiter.resolve(new Response(status, headers, bytes.slice(start, start + len)));
  } else {
    waiter.reject(new FetchError(outcome.val));
  }
}

const isThenable = (value) =>
  value !== null &&
  (typeof value === 'object' || typeof value === 'function') &&
  typeof value.then === 'function';

// A thrown plain object is a refusal; an Error (of either realm) or a
// primitive is a fault.
const isRefusal = (e) => e !== null && typeof e === 'object' && toStringTag(e) !== '[object Error]';

const refusal = (e) => ({ status: e.status, reason: e.reason === undefined ? '' : String(e.reason) });

function describe(e) {
  try {
    return e !== null && typeof e === 'object' && typeof e.stack === 'string' && e.stack !== ''
      ? `${e}\n${e.stack}`
      : String(e);
  } catch {
    return 'an exception that cannot be printed';
  }
}

// An async hook's failure surfaces after the hook has returned, when
// nothing is left to trap: it is logged, and the instance lives on.
function reportFailure(hook, result) {
  if (isThenable(result)) {
    Promise.resolve(result).catch((e) => log('error', `${hook} failed: ${describe(e)}`));
  }
}

const PENDING = Object.freeze({ tag: 'pending' });

const accepted = (accept) => ({ tag: 'accept', val: accept ?? ACCEPT });

/**
 * Makes the object to export as `handler` from the hooks described above.
 */
export function plugin({ onConnect, onMessage, onClose, onTimer } = {}) {
  return {
    onConnect(conn, req) {
      if (onConnect === undefined) {
        return accepted(ACCEPT);
      }
      let answer;
      try {
        answer = onConnect(conn, req);
      } catch (e) {
        if (isRefusal(e)) {
          return { tag: 'reject', val: refusal(e) };
        }
        // A fault: escaping the export traps the instance, with the
        // exception's message and stack in the log.
        throw e;
      }
      return isThenable(answer) ? decideLater(conn, answer) : accepted(answer);
    },

    onEvents(payload, events) {
      // The bindings make `payload` in a realm of their own, where a
      // Uint8Array is not `instanceof Uint8Array` to plugin code; views made
      // from this one (of the same buffer) are.
      const bytes = new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength);
      const count = events.length;
      for (let i = 0; i < count; i++) {
        // Tells the host where a failure would leave the batch, so that the
        // events after a failed one are not lost.
        if (i > 0) {
          handling(i);
        }
        const event = events[i];
        switch (event.tag) {
          case 'message': {
            if (onMessage !== undefined) {
              const { conn, kind, start, len } = event.val;
              const msg = bytes.subarray(start, start + len);
              reportFailure('onMessage', onMessage(conn, kind === 'text' ? decoder.decode(msg) : msg));
            }
            break;
          }
          case 'close': {
            if (onClose !== undefined) {
              const { conn, code, start, len } = event.val;
              const reason = len === 0 ? '' : decoder.decode(bytes.subarray(start, start + len));
              reportFailure('onClose', onClose(conn, { code, reason }));
            }
            break;
          }
          case 'timer': {
            if (onTimer !== undefined) {
              reportFailure('onTimer', onTimer(event.val));
            }
            break;
          }
          case 'response': {
            deliverResponse(bytes, event.val);
            break;
          }
        }
      }
      // The batch arrived in a buffer of its own, which the collector would
      // reclaim only once tens of MiB of them had piled up; detaching it
      // frees it now (and empties any view of it that was kept).
      if (CAN_DETACH) {
        payload.buffer.transfer(0);
      }
      // Continuations of promises settled above (an `await fetch(...)` that
      // got its response) have not run yet. They need no help: the engine
      // empties the microtask queue before this call returns to the host.
    },
  };
}

// The answer to an onConnect that returned a promise. A promise settled by
// plain code (an async hook that awaited nothing the host answers later) is
// answered in this very call. One waiting for the host (a fetch) cannot
// settle before the call returns, so the answer is `pending`, and the
// settled promise calls `answerConnect`.
//
// Which of the two it is shows only once every microtask has run. A 0 ms
// timer marks that moment: the engine runs the event loop until this call's
// promise settles, and it takes a timer only when no microtask is left. So
// `answerConnect` is never called before the host has seen `pending`.
function decideLater(conn, promise) {
  return new Promise((answer) => {
    let decided = false;
    const timer = setTimeout(() => {
      decided = true;
      answer(PENDING);
    }, 0);
    const settle = (result) => {
      if (!decided) {
        decided = true;
        clearTimeout(timer);
        answer(result);
        return;
      }
      const decision =
        result.tag === 'accept' ? { tag: 'ok', val: result.val } : { tag: 'err', val: result.val };
      try {
        answerConnect(conn, decision);
      } catch {
        // 'unknown-connection': the client gave up, or the route's
        // `handshake-timeout` answered it with 503 first.
      }
    };
    Promise.resolve(promise).then(
      (accept) => settle(accepted(accept)),
      (e) => {
        if (isRefusal(e)) {
          settle({ tag: 'reject', val: refusal(e) });
        } else {
          log('error', `onConnect failed: ${describe(e)}`);
          settle({ tag: 'reject', val: { status: 500, reason: 'plugin failed' } });
        }
      },
    );
  });
}
