//! Finding the workspace's built binaries, which tests run as a user would.
//!
//! Cargo builds an integration test's own package's binaries for it, but not other
//! packages' (`tortie-node` lives in `agent/`), so `make test` runs
//! `cargo build --workspace --bins` before `cargo test`. The binaries are looked up in
//! `TORTIE_BIN_DIR` if set, else next to the running executable: a test runs from
//! `target/<profile>/deps/`, a benchmark binary of this package from `target/<profile>/`,
//! and the binaries sit in `target/<profile>/` (examples in its `examples/`).

use std::env;
use std::path::PathBuf;

/// The directory holding the built binaries.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = env::var_os("TORTIE_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let test_executable = env::current_exe()
        .unwrap_or_else(|error| panic!("cannot locate the test executable: {error}"));
    let parent = test_executable.parent();
    let profile_dir = match parent {
        Some(dir) if dir.file_name().is_some_and(|name| name == "deps") => dir.parent(),
        other => other,
    };
    let profile_dir = profile_dir.unwrap_or_else(|| {
        panic!(
            "cannot derive target/<profile>/ from the test executable {}: set TORTIE_BIN_DIR",
            test_executable.display()
        )
    });
    profile_dir.to_path_buf()
}

/// The path of the workspace binary `name` (or `examples/<name>`), which must have been
/// built.
pub fn binary(name: &str) -> PathBuf {
    let dir = bin_dir();
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{name} is not built: {} does not exist. Run `cargo build --workspace --bins` \
         before the integration tests (`make test` does), or point TORTIE_BIN_DIR at the \
         directory that holds it",
        path.display()
    );
    path
}

/// The node agent, `tortie-node`.
pub fn tortie_node() -> PathBuf {
    binary("tortie-node")
}
