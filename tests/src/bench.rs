//! What every benchmark prints beside its figures.

/// The 1-, 5- and 15-minute load averages, as `/proc/loadavg` gives them: a figure measured
/// on a busy machine says so.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|e| format!("<{e}>"))
}
