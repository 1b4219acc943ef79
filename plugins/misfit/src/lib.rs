//! A test fixture for `berth check`: a real component whose handler has a
//! function of the wrong type, exports one berth no longer calls, and lacks
//! `on-events`.

wit_bindgen::generate!({ path: "wit", world: "misfit" });

use exports::berth::plugin::handler::Guest;

struct Misfit;

impl Guest for Misfit {
    fn on_connect(_req: String) -> bool {
        true
    }

    fn on_message(_conn: u64, _msg: String) {}
}

export!(Misfit);
