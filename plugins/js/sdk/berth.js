// berth's plugin SDK for JavaScript (componentize-js), for berth:plugin@0.3.0.
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
//   onMessage(conn, msg)  A complete message arrived: `msg` is a string for a
//       text message and a Uint8Array for a binary one.
//   onClose(conn, { code, reason })  The connection has ended (once for each
//       accepted connection, after its last message); it can no longer be
//       sent to.
//   onTimer(token)  A timer set with `setTimer` fired; `token` is the BigInt
//       given then.
//
// Connection ids, timer ids and timer tokens are u64 and arrive as BigInt.
//
// A binary `msg` is a view into the buffer that carries the whole batch of
// events the host delivered, and that buffer is detached (emptied) once the
// batch has been handled, so that large messages are freed at once instead of
// piling up until the garbage collector runs. The view is valid during the
// call only: keep a copy with `msg.slice()` to use the bytes later. Strings
// (text messages, close reasons) are copies and stay valid.
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
// 'invalid-message' or 'too-large' (publish), 'too-many-timers' (setTimer). The bindings run in a realm of their own, so `e instanceof
// Error` is false for it: look at `e.payload`. A failed send usually means the
// client is gone or too slow to read, and the host closes it by itself. An
// exception a hook lets escape traps the instance, and the rest of its batch
// is lost with it.

import {
  send as hostSend,
  close as hostClose,
  publish as hostPublish,
  setTimer as hostSetTimer,
  subscribe,
  unsubscribe,
  cancelTimer,
  configGet,
  log,
  handling,
} from 'berth:plugin/host@0.3.0';

// Native codecs, made once. The host has checked that text is UTF-8; a
// leading byte order mark is kept, as it arrived.
const decoder = new TextDecoder('utf-8', { ignoreBOM: true });
const encoder = new TextEncoder();

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
 * connection id, or undefined for none); returns how many it is for.
 */
export function publish(topic, msg, exclude) {
  return hostPublish(topic, toMessage(msg), exclude);
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

// subscribe(conn, topic), unsubscribe(conn, topic): a connection's topic
// subscriptions, which end with it. cancelTimer(id) -> boolean: false if the
// timer had already ended. configGet(key) -> string or undefined: a value of
// the route's [route.config] table. log(level, message): a line in the host's
// log, `level` one of 'trace', 'debug', 'info', 'warn' and 'error'.
export { subscribe, unsubscribe, cancelTimer, configGet, log };

/**
 * Makes the object to export as `handler` from the hooks described above.
 */
export function plugin({ onConnect, onMessage, onClose, onTimer } = {}) {
  return {
    onConnect(conn, req) {
      if (onConnect === undefined) {
        return ACCEPT;
      }
      let accept;
      try {
        accept = onConnect(conn, req);
      } catch (e) {
        throw refusal(e);
      }
      return accept ?? ACCEPT;
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
              onMessage(conn, kind === 'text' ? decoder.decode(msg) : msg);
            }
            break;
          }
          case 'close': {
            if (onClose !== undefined) {
              const { conn, code, start, len } = event.val;
              const reason = len === 0 ? '' : decoder.decode(bytes.subarray(start, start + len));
              onClose(conn, { code, reason });
            }
            break;
          }
          case 'timer': {
            if (onTimer !== undefined) {
              onTimer(event.val);
            }
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
    },
  };
}

// What an exception escaping onConnect becomes. The bindings send whatever is
// thrown as the refusal (for a failed host call's exception, its error case;
// for an Error of the plugin's realm, the Error itself), so faults are told
// apart here: a plain object is a refusal; anything else (an Error of either
// realm, a primitive) is a fault, made to throw itself again while the
// bindings read the refusal, which traps with its message and stack.
function refusal(e) {
  if (e !== null && typeof e === 'object' && toStringTag(e) !== '[object Error]') {
    return { status: e.status, reason: e.reason === undefined ? '' : String(e.reason) };
  }
  return {
    status: 0,
    get reason() {
      throw e;
    },
  };
}
