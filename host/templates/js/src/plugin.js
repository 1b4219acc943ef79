// {{name}}: a berth plugin. It greets each connection and echoes its messages.
//
// berth calls the `handler` functions as connections come and go; the host
// functions imported below are what a plugin can ask of berth (send, close,
// topics, timers, config values, log lines; see wit/berth.wit). Connection ids
// are u64 and arrive as BigInt.

import { send } from 'berth:plugin/host@0.2.0';

// A host call that fails throws; a failed send means the client is gone or
// too slow, and berth closes it on its own.
function trySend(conn, msg) {
  try {
    send(conn, msg);
  } catch {
    // Nothing to do: see above.
  }
}

export const handler = {
  // Return an accept record to open the connection, or throw a plain object
  // { status, reason } to refuse it with that HTTP status.
  onConnect(conn, _req) {
    // Sent now, delivered right after the handshake completes.
    trySend(conn, { tag: 'text', val: 'hello from {{name}}' });
    return { subprotocol: undefined };
  },

  onMessage(conn, msg) {
    trySend(conn, msg);
    if (msg.tag === 'binary') {
      // Each binary message arrives in a fresh ArrayBuffer that the garbage
      // collector reclaims only after some 60 MiB have piled up, more than an
      // instance's default 64 MiB; detaching it frees it now. Text is cheap
      // to receive but costs about half a microsecond per character to send.
      msg.val.buffer.transfer(0);
    }
  },

  onClose(_conn, _info) {},

  onTimer(_token) {},
};
