//! The compiled-plugin cache: machine code for a component, kept on disk under
//! the component's content hash and the engine's compatibility hash, so that a
//! restart or a reload of an unchanged plugin skips the compiler (50 ms for a
//! small Rust plugin, seconds for a JavaScript or Python one).
//!
//! Each entry is the serialized component followed by the BLAKE3 hash of those
//! bytes. A truncated or corrupted entry fails that check, and an entry from
//! another wasmtime version or engine configuration fails wasmtime's own check;
//! either way the plugin is compiled again and the entry rewritten.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use wasmtime::Engine;
use wasmtime::component::Component;

/// The cache's size above which the least recently used entries go.
const MAX_TOTAL_BYTES: u64 = 1 << 30;
const EXTENSION: &str = "cwasm";
const CHECKSUM_LEN: usize = blake3::OUT_LEN;

/// Where a component came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeSource {
    /// The compiler made it (and the cache now holds it, if there is one).
    Compiled,
    /// It was loaded from the cache.
    Cached,
}

impl CodeSource {
    /// A word for logs.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CodeSource::Compiled => "compiled",
            CodeSource::Cached => "cache",
        }
    }
}

/// The on-disk cache, or no cache at all.
pub(crate) struct CompileCache {
    dir: Option<PathBuf>,
    /// Part of every entry's name: entries of another engine are never looked at.
    engine_tag: String,
}

impl CompileCache {
    /// A cache in `dir` (created if missing), or none when `dir` is `None` or
    /// cannot be created (which is logged: plugins still load, only slower).
    pub(crate) fn open(engine: &Engine, dir: Option<&Path>) -> CompileCache {
        // wasmtime's compatibility hash covers the compiler's target and
        // flags, the engine's tunables and wasm features, and the wasmtime
        // crate's full version (through `Config::module_version`, whose
        // default hashes e.g. "50.0.1"), so any upgrade, a patch release
        // included, starts a fresh set of entries. `Component::deserialize`
        // alone would compare the major version only.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_tag = format!("{:016x}", hasher.finish());
        let dir = dir.and_then(|dir| match fs::create_dir_all(dir) {
            Ok(()) => Some(dir.to_path_buf()),
            Err(error) => {
                tracing::warn!(
                    dir = %dir.display(),
                    "cannot use the compile cache ({error}); plugins will be compiled at every load"
                );
                None
            }
        });
        CompileCache { dir, engine_tag }
    }

    fn entry(&self, hash: &blake3::Hash) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        Some(dir.join(format!("{}-{}.{EXTENSION}", hash.to_hex(), self.engine_tag)))
    }

    /// The component for `bytes` (whose content hash is `hash`): from the cache
    /// when it holds a good entry, else compiled and then stored.
    pub(crate) fn component(
        &self,
        engine: &Engine,
        hash: &blake3::Hash,
        bytes: &[u8],
    ) -> wasmtime::Result<(Component, CodeSource)> {
        let entry = self.entry(hash);
        if let Some(entry) = &entry
            && let Some(component) = load(engine, entry)
        {
            return Ok((component, CodeSource::Cached));
        }
        let component = Component::from_binary(engine, bytes)?;
        if let Some(entry) = &entry {
            match component.serialize() {
                Ok(serialized) => {
                    if let Err(error) = store(entry, &serialized) {
                        tracing::warn!(entry = %entry.display(), "cannot write to the compile cache: {error}");
                    }
                    self.prune();
                }
                Err(error) => tracing::warn!("cannot serialize a compiled plugin: {error:#}"),
            }
        }
        Ok((component, CodeSource::Compiled))
    }

    /// Removes the least recently used entries while the cache is over its size.
    fn prune(&self) {
        let Some(dir) = &self.dir else { return };
        let Ok(listing) = fs::read_dir(dir) else {
            return;
        };
        let mut entries: Vec<(SystemTime, u64, PathBuf)> = listing
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == EXTENSION))
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                Some((meta.modified().ok()?, meta.len(), e.path()))
            })
            .collect();
        let mut total: u64 = entries.iter().map(|(_, len, _)| len).sum();
        entries.sort();
        for (_, len, path) in entries {
            if total <= MAX_TOTAL_BYTES {
                break;
            }
            if fs::remove_file(&path).is_ok() {
                total -= len;
            }
        }
    }
}

/// A good entry's component, or `None` (and the entry removed) when it is
/// missing, corrupt or made by an incompatible engine.
fn load(engine: &Engine, entry: &Path) -> Option<Component> {
    let data = fs::read(entry).ok()?;
    let valid = data.len() > CHECKSUM_LEN && {
        let (body, checksum) = data.split_at(data.len() - CHECKSUM_LEN);
        blake3::hash(body).as_bytes() == checksum
    };
    if !valid {
        tracing::warn!(entry = %entry.display(), "compile cache entry is corrupt; compiling again");
        let _ = fs::remove_file(entry);
        return None;
    }
    let body = &data[..data.len() - CHECKSUM_LEN];
    // SAFETY: deserializing runs the machine code in `body` later, so it must
    // have been written by `Component::serialize`. It was: the cache folder
    // belongs to the operator (like the berth binary itself), the checksum
    // rules out torn and corrupted writes, and wasmtime refuses bytes made by
    // another version or configuration of the engine.
    match unsafe { Component::deserialize(engine, body) } {
        Ok(component) => {
            // Its age decides eviction: a used entry is a young one.
            let _ = fs::File::options()
                .write(true)
                .open(entry)
                .and_then(|f| f.set_modified(SystemTime::now()));
            Some(component)
        }
        Err(error) => {
            tracing::info!(entry = %entry.display(), "compile cache entry is stale ({error:#}); compiling again");
            let _ = fs::remove_file(entry);
            None
        }
    }
}

/// Writes an entry under a temporary name, then renames it into place, so that
/// a reader never sees half of it.
fn store(entry: &Path, serialized: &[u8]) -> std::io::Result<()> {
    let dir = entry.parent().unwrap_or(Path::new("."));
    let temp = dir.join(format!(
        ".{}.{}.tmp",
        entry
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("entry"),
        std::process::id()
    ));
    let result = (|| {
        let mut file = fs::File::create(&temp)?;
        file.write_all(serialized)?;
        file.write_all(blake3::hash(serialized).as_bytes())?;
        file.sync_all()?;
        fs::rename(&temp, entry)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest component there is: no imports, no exports.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    #[test]
    fn a_second_load_comes_from_the_cache_and_a_bad_entry_is_recompiled() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let cache = CompileCache::open(&engine, Some(dir.path()));
        let hash = blake3::hash(EMPTY_COMPONENT);
        let load = || cache.component(&engine, &hash, EMPTY_COMPONENT).unwrap().1;
        assert_eq!(load(), CodeSource::Compiled);
        assert_eq!(load(), CodeSource::Cached);

        let entry = cache.entry(&hash).unwrap();
        let mut data = fs::read(&entry).unwrap();
        let middle = data.len() / 2;
        data[middle] ^= 0xff;
        fs::write(&entry, &data).unwrap();
        assert_eq!(
            load(),
            CodeSource::Compiled,
            "a corrupt entry is compiled again"
        );
        assert_eq!(load(), CodeSource::Cached, "and rewritten");

        fs::write(&entry, b"short").unwrap();
        assert_eq!(
            load(),
            CodeSource::Compiled,
            "a truncated entry is compiled again"
        );
    }

    #[test]
    fn without_a_folder_everything_is_compiled() {
        let engine = Engine::default();
        let cache = CompileCache::open(&engine, None);
        let hash = blake3::hash(EMPTY_COMPONENT);
        for _ in 0..2 {
            let (_, origin) = cache.component(&engine, &hash, EMPTY_COMPONENT).unwrap();
            assert_eq!(origin, CodeSource::Compiled);
        }
    }
}
