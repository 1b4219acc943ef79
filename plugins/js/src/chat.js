// Chat: rooms. A client joins the room named in its query (`?room=NAME`,
// default `lobby`); every text message goes to everyone else in that room and
// to nobody elsewhere; joins and leaves are announced to the room. The host
// does the fan-out through one topic per room. Messages are JSON objects:
//
// - {"type":"welcome","id":N,"room":"lobby","members":[...]} to a newcomer,
// - {"type":"join","id":N} and {"type":"leave","id":N,"code":C,"reason":"..."},
// - {"type":"message","from":N,"text":"..."}.
//
// Connection ids are u64, which arrive as BigInt. The JSON is built by hand:
// JSON.stringify cannot write a BigInt, and it escapes \b and \f short where
// the Rust chat, whose output this matches byte for byte, writes \u0008 and
// \u000c.

import { plugin, publish, send, subscribe } from '../sdk/berth.js';

// One instance serves the whole route, so who is in which room lives here:
// connection id (BigInt) -> room name.
const rooms = new Map();

const ROOM_RULES = "room names are 1-64 of A-Z, a-z, 0-9, '-' and '_'";

const SHORT_ESCAPES = { '"': '\\"', '\\': '\\\\', '\n': '\\n', '\r': '\\r', '\t': '\\t' };

// `s` as a JSON string literal: the short escapes above, \u00xx for the other
// control characters, and everything else (non-ASCII included) as it is.
function jsonString(s) {
  const body = s.replace(
    /["\\\u0000-\u001f]/g,
    (c) => SHORT_ESCAPES[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
  return `"${body}"`;
}

// The room named by `?room=NAME` (the first `room=` pair; the query is not
// percent-decoded), or undefined if the name breaks the rules.
function roomOf(query) {
  const pair = (query ?? '').split('&').find((p) => p.startsWith('room='));
  const name = pair === undefined ? 'lobby' : pair.slice('room='.length);
  return /^[A-Za-z0-9_-]{1,64}$/.test(name) ? name : undefined;
}

const topic = (room) => `room:${room}`;

// Host calls that fail return err, which the bindings raise as an exception.
// A failed send or subscribe means the client is already gone or too slow,
// and the host closes it on its own, so there is nothing to do about it here.
function ignoringConnError(call) {
  try {
    call();
  } catch {
    // Nothing to do: see above.
  }
}

export const handler = plugin({
  // Throwing a plain object { status, reason } refuses the connection with
  // that HTTP status.
  onConnect(conn, req) {
    const room = roomOf(req.query);
    if (room === undefined) {
      throw { status: 400, reason: ROOM_RULES };
    }
    const members = [...rooms]
      .filter(([, r]) => r === room)
      .map(([id]) => id)
      .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    const welcome =
      `{"type":"welcome","id":${conn},"room":${jsonString(room)},` +
      `"members":[${members.join(',')}]}`;
    ignoringConnError(() => send(conn, welcome));
    // Announced before subscribing, so the newcomer does not hear its own join.
    publish(topic(room), `{"type":"join","id":${conn}}`);
    ignoringConnError(() => subscribe(conn, topic(room)));
    rooms.set(conn, room);
  },

  onMessage(conn, msg) {
    // Binary messages (Uint8Array) are ignored.
    if (typeof msg !== 'string') {
      return;
    }
    const room = rooms.get(conn);
    if (room === undefined) {
      return;
    }
    publish(topic(room), `{"type":"message","from":${conn},"text":${jsonString(msg)}}`, conn);
  },

  onClose(conn, { code, reason }) {
    const room = rooms.get(conn);
    if (room === undefined) {
      return;
    }
    rooms.delete(conn);
    const out = `{"type":"leave","id":${conn},"code":${code},"reason":${jsonString(reason)}}`;
    // The host ended the connection's subscription before this call.
    publish(topic(room), out);
  },
});
