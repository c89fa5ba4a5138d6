//! Tests that cannot run on this machine say so where a person will see it: a passing test's
//! output is captured by the test runner, so [`skipped`] also appends the line to
//! `target/<profile>/skipped-tests.txt`, which `make test` prints after the run.

use std::io::Write;

/// The file `make test` prints at the end.
pub fn skipped_list() -> std::path::PathBuf {
    crate::bin_dir().join("skipped-tests.txt")
}

/// Records that `test` could not run here and why: printed to stdout and stderr, and added to
/// [`skipped_list`]. The caller then returns without asserting anything.
pub fn skipped(test: &str, reason: &str) {
    let line = format!("skipped: {test}: {reason}");
    println!("{line}");
    eprintln!("{line}");
    let path = skipped_list();
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut file| writeln!(file, "{line}"));
    if let Err(error) = written {
        eprintln!("(cannot record it in {}: {error})", path.display());
    }
}
