//! Hostile clients: malformed frames, abusive handshakes and slow readers must
//! cost only their own connection while another route keeps answering.
