//! Tests that cannot run on this machine say so where a person will see it, and do not pass:
//! [`cannot_run`] prints "skipped: <test>: <reason>", appends that line to
//! `target/<profile>/skipped-tests.txt` (which `make test` prints after the run, since the
//! test runner's own report is long), and fails the test. A test that did not run never
//! reports success.

use std::io::Write;

/// The file `make test` prints at the end.
pub fn skipped_list() -> std::path::PathBuf {
    crate::bin_dir().join("skipped-tests.txt")
}

/// Records that `test` could not run here and why (stdout, stderr, [`skipped_list`]), then
/// fails it with the same line.
pub fn cannot_run(test: &str, reason: &str) -> ! {
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
    panic!("{line}");
}
