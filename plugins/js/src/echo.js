// Echo: every message goes back to its sender, text as text and binary as binary.

import { plugin, send } from '../sdk/berth.js';

export const handler = plugin({
  onMessage(conn, msg) {
    try {
      send(conn, msg);
    } catch {
      // A host call's `err` arrives as an exception. A failed send means the
      // client is gone or too slow to read, and the host closes it itself.
    }
  },
});
