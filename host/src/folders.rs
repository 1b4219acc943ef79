//! The per-user folders berth falls back on when nothing names one, found the
//! XDG way: an `XDG_*` variable, else a folder under `$HOME`.

use std::path::PathBuf;

/// Where compiled plugins are cached unless the config says otherwise:
/// `$XDG_CACHE_HOME/berth`, else `~/.cache/berth`; none without a home.
pub fn default_cache_dir() -> Option<PathBuf> {
    user_dir("XDG_CACHE_HOME", ".cache").map(|dir| dir.join("berth"))
}

/// The folder an XDG variable names, else `$HOME/home_relative`.
pub(crate) fn user_dir(xdg_var: &str, home_relative: &str) -> Option<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var(xdg_var).or_else(|| var("HOME").map(|home| home.join(home_relative)))
}
