// Fetcher: outbound HTTP from both hooks. The route grants the backends it
// may reach with `allowed-outbound`; any other URL fails with 'not-allowed'.
//
// - Connecting with `?check=URL` (percent-encoded) asks URL first: the
//   connection opens if it answers 200, and is refused with its status and
//   'denied' otherwise, or with 502 and the reason there was no answer
//   ('timeout', 'connect-failed', ...). Without `check` it opens at once.
// - Each text message is a URL to fetch: the answer is "STATUS BODY", or
//   "error KIND" when there is no response.

import { plugin, send } from '../sdk/berth.js';

// A failed send means the client is gone or too slow, and the host closes it
// on its own: nothing to do about it here.
function trySend(conn, msg) {
  try {
    send(conn, msg);
  } catch {
    // Nothing to do: see above.
  }
}

async function check(url) {
  let response;
  try {
    response = await fetch(url);
  } catch (e) {
    throw { status: 502, reason: e.kind ?? 'failed' };
  }
  if (response.status !== 200) {
    // A refusal must be a client or server error; a backend that answers,
    // say, 204 or a redirect still denies.
    const status = response.status >= 400 && response.status <= 599 ? response.status : 403;
    throw { status, reason: 'denied' };
  }
}

export const handler = plugin({
  onConnect(_conn, req) {
    const url = new URLSearchParams(req.query ?? '').get('check');
    // Only a connection that needs the backend waits for it.
    return url === null ? undefined : check(url);
  },

  async onMessage(conn, msg) {
    if (typeof msg !== 'string') {
      return;
    }
    let reply;
    try {
      const response = await fetch(msg.trim());
      reply = `${response.status} ${await response.text()}`;
    } catch (e) {
      reply = `error ${e.kind ?? e.message}`;
    }
    trySend(conn, reply);
  },
});
