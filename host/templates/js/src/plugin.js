// {{name}}: a berth plugin. It greets each connection and echoes its messages.
//
// `plugin`, from berth.js (the berth SDK), turns the hooks below into the
// `handler` berth calls as connections come and go; every hook is optional.
// berth.js also exports what a plugin can ask of berth: send (used here),
// publish, close, subscribe, timers, config values, log lines, and state
// that outlives the instance (a topic's history, its members, a key-value
// store). Its opening comment describes them all; wit/berth.wit is the
// contract underneath. Connection ids are u64 and arrive as BigInt.

import { plugin, send } from './berth.js';

// A host call that fails throws; a failed send means the client is gone or
// too slow, and berth closes it on its own.
function trySend(conn, msg) {
  try {
    send(conn, msg);
  } catch {
    // Nothing to do: see above.
  }
}

export const handler = plugin({
  // Return nothing to open the connection, or throw a plain object
  // { status, reason } to refuse it with that HTTP status.
  onConnect(conn, _req) {
    // Sent now, delivered right after the handshake completes.
    trySend(conn, 'hello from {{name}}');
  },

  // A text message arrives as a string, a binary one as a Uint8Array that is
  // valid during this call only: keep `msg.slice()` to use it later.
  onMessage(conn, msg) {
    trySend(conn, msg);
  },

  // The connection has ended; `info` is { code, reason }.
  onClose(_conn, _info) {},

  // A timer set with setTimer(delayMs, repeat, token) fired.
  onTimer(_token) {},
});
