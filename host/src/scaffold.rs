//! `berth new`: writes a plugin project, in Rust, JavaScript or Python, that
//! builds into a component with one command and passes `berth check`.
//!
//! Every project carries its own copy of `wit/berth.wit` and of the plugin
//! SDK for its language, so it builds wherever it is moved, with no path back
//! to berth.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::check::WORLD_WIT;

/// A language `berth new` writes projects in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    /// Rust with berth's plugin SDK, built by cargo for wasm32-wasip2.
    Rust,
    /// JavaScript, built by componentize-js from npm.
    JavaScript,
    /// Python, built by componentize-py from PyPI.
    Python,
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lang::Rust => "Rust",
            Lang::JavaScript => "JavaScript",
            Lang::Python => "Python",
        })
    }
}

/// What `write` made.
#[derive(Debug)]
pub struct Project {
    /// The project's language.
    pub lang: Lang,
    /// The files written, relative to the project folder.
    pub files: Vec<PathBuf>,
    /// The one command, run in the project folder, that builds the plugin.
    pub build_command: &'static str,
    /// Where that command puts the component, relative to the project folder.
    pub output: PathBuf,
}

/// Why a project could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// The name cannot name a plugin (and its route, crate or package).
    #[error(
        "{0:?} cannot name a plugin: use 1-64 lower-case letters, digits and '-', \
         starting with a letter"
    )]
    BadName(String),
    /// The folder exists and holds files already.
    #[error("{0} already exists and is not empty")]
    NotEmpty(PathBuf),
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// One file of a template.
struct File {
    path: &'static str,
    text: &'static str,
    /// Whether `{{name}}`-style placeholders are filled in; vendored files
    /// are copied as they are.
    fill: bool,
    executable: bool,
}

const fn template(path: &'static str, text: &'static str) -> File {
    File {
        path,
        text,
        fill: true,
        executable: false,
    }
}

const fn vendored(path: &'static str, text: &'static str) -> File {
    File {
        path,
        text,
        fill: false,
        executable: false,
    }
}

const RUST: &[File] = &[
    template(
        "Cargo.toml",
        include_str!("../templates/rust/Cargo.toml.in"),
    ),
    template(
        ".cargo/config.toml",
        include_str!("../templates/rust/cargo-config.toml"),
    ),
    template(".gitignore", include_str!("../templates/rust/gitignore")),
    template("README.md", include_str!("../templates/rust/README.md")),
    template("src/lib.rs", include_str!("../templates/rust/src/lib.rs")),
    vendored(
        "berth-plugin/Cargo.toml",
        include_str!("../../plugins/berth-plugin/Cargo.toml"),
    ),
    vendored(
        "berth-plugin/src/lib.rs",
        include_str!("../../plugins/berth-plugin/src/lib.rs"),
    ),
    vendored("berth-plugin/wit/berth.wit", WORLD_WIT),
];

const JAVASCRIPT: &[File] = &[
    template(
        "package.json",
        include_str!("../templates/js/package.json.in"),
    ),
    template("build.mjs", include_str!("../templates/js/build.mjs")),
    template(".gitignore", include_str!("../templates/js/gitignore")),
    template("README.md", include_str!("../templates/js/README.md")),
    template(
        "src/plugin.js",
        include_str!("../templates/js/src/plugin.js"),
    ),
    vendored(
        "src/berth.js",
        include_str!("../../plugins/js/sdk/berth.js"),
    ),
    vendored("wit/berth.wit", WORLD_WIT),
];

const PYTHON: &[File] = &[
    template(
        "requirements.txt",
        include_str!("../templates/python/requirements.txt"),
    ),
    File {
        executable: true,
        ..template("build.sh", include_str!("../templates/python/build.sh"))
    },
    template(".gitignore", include_str!("../templates/python/gitignore")),
    template("README.md", include_str!("../templates/python/README.md")),
    template("app.py", include_str!("../templates/python/app.py")),
    // The SDK sits beside app.py, on componentize-py's search path (`.`).
    vendored(
        "berth/__init__.py",
        include_str!("../../plugins/python/sdk/berth/__init__.py"),
    ),
    vendored("wit/berth.wit", WORLD_WIT),
];

/// Writes a new `lang` project for the plugin `name` into `dir` (created if
/// missing; it must be empty if it exists).
pub fn write(name: &str, lang: Lang, dir: &Path) -> Result<Project, ScaffoldError> {
    let valid = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && !name.contains("--")
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        return Err(ScaffoldError::BadName(name.to_string()));
    }
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ScaffoldError::Write { path, source }
    };
    if std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(ScaffoldError::NotEmpty(dir.to_path_buf()));
    }
    let snake = name.replace('-', "_");
    let camel: String = name
        .split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or(String::new(), |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect();
    let (files, build_command, output) = match lang {
        Lang::Rust => (
            RUST,
            "cargo build --release",
            format!("target/wasm32-wasip2/release/{snake}.wasm"),
        ),
        Lang::JavaScript => (
            JAVASCRIPT,
            "npm install && npm run build",
            format!("{name}.wasm"),
        ),
        Lang::Python => (PYTHON, "./build.sh", format!("{name}.wasm")),
    };
    let mut written = Vec::new();
    for file in files {
        let path = dir.join(file.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(write_err(parent))?;
        }
        let text = if file.fill {
            file.text
                .replace("{{name}}", name)
                .replace("{{file}}", &snake)
                .replace("{{type}}", &camel)
        } else {
            file.text.to_string()
        };
        std::fs::write(&path, text).map_err(write_err(&path))?;
        if file.executable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .map_err(write_err(&path))?;
        }
        written.push(PathBuf::from(file.path));
    }
    Ok(Project {
        lang,
        files: written,
        build_command,
        output: PathBuf::from(output),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_cannot_name_a_crate_package_or_route_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for bad in [
            "",
            "Chat",
            "9lives",
            "a_b",
            "a--b",
            "a-",
            "a/b",
            "é",
            &"a".repeat(65),
        ] {
            assert!(
                matches!(
                    write(bad, Lang::Rust, &dir.path().join("x")),
                    Err(ScaffoldError::BadName(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_non_empty_folder_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("keep"), "mine").unwrap();
        assert!(matches!(
            write("chat", Lang::Python, dir.path()),
            Err(ScaffoldError::NotEmpty(_))
        ));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("keep")).unwrap(),
            "mine"
        );
    }

    #[test]
    fn placeholders_are_filled_and_vendored_files_copied_as_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let project = write("live-feed", Lang::Rust, &dir.path().join("p")).unwrap();
        let root = dir.path().join("p");
        let lib = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
        assert!(lib.contains("struct LiveFeed;") && !lib.contains("{{"));
        assert_eq!(
            std::fs::read_to_string(root.join("berth-plugin/wit/berth.wit")).unwrap(),
            WORLD_WIT
        );
        assert_eq!(
            project.output,
            PathBuf::from("target/wasm32-wasip2/release/live_feed.wasm")
        );
    }

    #[test]
    fn a_javascript_project_carries_the_sdk_its_plugin_imports() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("p");
        let project = write("live-feed", Lang::JavaScript, &root).unwrap();
        let sdk = include_str!("../../plugins/js/sdk/berth.js");
        assert_eq!(
            std::fs::read_to_string(root.join("src/berth.js")).unwrap(),
            sdk
        );
        assert!(project.files.contains(&PathBuf::from("src/berth.js")));
        let plugin = std::fs::read_to_string(root.join("src/plugin.js")).unwrap();
        assert!(plugin.contains("from './berth.js';"), "{plugin}");
        assert!(plugin.contains("hello from live-feed") && !plugin.contains("{{"));
        let build = std::fs::read_to_string(root.join("build.mjs")).unwrap();
        assert!(build.contains("'./live-feed.wasm'") && !build.contains("{{"));
        assert_eq!(project.output, PathBuf::from("live-feed.wasm"));
        // The SDK imports the host interface of the contract it is shipped with.
        let version = WORLD_WIT
            .lines()
            .find_map(|line| line.strip_prefix("package berth:plugin@"))
            .and_then(|rest| rest.strip_suffix(';'))
            .unwrap();
        assert!(
            sdk.contains(&format!("from 'berth:plugin/host@{version}';")),
            "the SDK imports another version than {version}"
        );
    }

    #[test]
    fn python_projects_carry_the_sdk_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let project = write("live-feed", Lang::Python, &dir.path().join("p")).unwrap();
        let root = dir.path().join("p");
        let app = std::fs::read_to_string(root.join("app.py")).unwrap();
        assert!(app.contains("class Handler(berth.Plugin):"));
        assert!(app.contains("hello from live-feed") && !app.contains("{{"));
        let build = std::fs::read_to_string(root.join("build.sh")).unwrap();
        assert!(build.contains("--output live-feed.wasm"));
        assert_eq!(
            std::fs::read_to_string(root.join("berth/__init__.py")).unwrap(),
            include_str!("../../plugins/python/sdk/berth/__init__.py")
        );
        assert_eq!(
            std::fs::read_to_string(root.join("wit/berth.wit")).unwrap(),
            WORLD_WIT
        );
        assert!(project.files.contains(&PathBuf::from("berth/__init__.py")));
        assert_eq!(project.output, PathBuf::from("live-feed.wasm"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(root.join("build.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111);
    }

    /// The templates pin the same tool versions berth's own plugins are built
    /// and tested with.
    #[test]
    fn templates_pin_the_tested_tool_versions() {
        let pinned = |text: &str, key: &str| {
            text.lines()
                .find(|line| line.contains(key))
                .map(|line| line.trim().trim_end_matches(',').to_string())
        };
        let js = include_str!("../../plugins/js/package.json");
        for key in [
            "\"@bytecodealliance/componentize-js\"",
            "\"@bytecodealliance/preview2-shim\"",
        ] {
            let template = pinned(include_str!("../templates/js/package.json.in"), key);
            assert!(template.is_some(), "{key}");
            assert_eq!(template, pinned(js, key));
        }
        let py = include_str!("../../plugins/python/requirements.txt");
        assert_eq!(
            pinned(
                include_str!("../templates/python/requirements.txt"),
                "componentize-py"
            ),
            pinned(py, "componentize-py")
        );
    }
}
