//! Durations as Calico writes them: Go's `time.Duration` text (`120s`, `2m0s`, `1h30m`,
//! `500ms`), which is what `nodeMeshMaxRestartTime` and `maxRestartTime` hold.

use std::time::Duration;

/// Parses Go's duration syntax: one or more `<number><unit>` with units `h`, `m`, `s`,
/// `ms`, `us` (or `µs`) and `ns`, the number possibly with a fraction. A bare `0` is zero.
/// Negative durations are refused: no timer here runs backwards.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid =
        || format!("\"{text}\" is not a duration; valid forms: 120s, 2m, 1m30s, 500ms, 1.5h");
    let trimmed = text.trim();
    if trimmed == "0" {
        return Ok(Duration::ZERO);
    }
    if trimmed.is_empty() {
        return Err(invalid());
    }
    let mut rest = trimmed;
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        if number_end == 0 {
            return Err(invalid());
        }
        let number: f64 = rest[..number_end].parse().map_err(|_| invalid())?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return Err(invalid()),
        };
        rest = &rest[unit_end..];
        total += number * seconds_per_unit;
    }
    Duration::try_from_secs_f64(total).map_err(|_| invalid())
}

/// Writes a duration the way [`parse_duration`] (and Go) reads it back: whole seconds as
/// `120s`, anything finer in milliseconds (`1500ms`) or, below that, nanoseconds.
pub fn format_duration(duration: Duration) -> String {
    if duration.subsec_nanos() == 0 {
        format!("{}s", duration.as_secs())
    } else if duration.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", duration.as_millis())
    } else {
        format!("{}ns", duration.as_nanos())
    }
}

/// `#[serde(with = "optional_duration")]` for an `Option<Duration>` stored as Go text.
pub(crate) mod optional_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(duration) => serializer.serialize_str(&super::format_duration(*duration)),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(deserializer)?
            .map(|text| super::parse_duration(&text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_go_durations_and_writes_them_back() {
        for (text, seconds) in [
            ("120s", 120.0),
            ("2m0s", 120.0),
            ("2m", 120.0),
            ("1h30m", 5400.0),
            ("500ms", 0.5),
            ("1.5h", 5400.0),
            ("0", 0.0),
            ("250us", 0.00025),
        ] {
            let parsed = parse_duration(text).unwrap();
            assert_eq!(parsed.as_secs_f64(), seconds, "{text}");
            assert_eq!(parse_duration(&format_duration(parsed)).unwrap(), parsed);
        }
        assert_eq!(format_duration(Duration::from_secs(120)), "120s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        for bad in ["", "120", "s", "-5s", "2 m", "1x", "1.2.3s"] {
            let error = parse_duration(bad).unwrap_err();
            assert!(error.contains("valid forms"), "{bad}: {error}");
        }
    }
}
