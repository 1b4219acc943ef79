// Echo: every message goes back to its sender, text as text and binary as binary.

import { send } from 'berth:plugin/host@0.2.0';

export const handler = {
  // result<accept, reject>: returning the record answers `ok`.
  onConnect(_conn, _req) {
    return { subprotocol: undefined };
  },

  onMessage(conn, msg) {
    try {
      send(conn, msg);
    } catch {
      // A host call's `err` arrives as an exception. A failed send means the
      // client is gone or too slow to read, and the host closes it itself.
    }
    if (msg.tag === 'binary') {
      // Each binary message arrives in a fresh ArrayBuffer that the collector
      // reclaims only once some 60 MiB of them have piled up, beyond the
      // 64 MiB an instance gets by default. send has copied the bytes out, so
      // detaching the buffer frees it now.
      msg.val.buffer.transfer(0);
    }
  },

  onClose(_conn, _info) {},

  onTimer(_token) {},
};
