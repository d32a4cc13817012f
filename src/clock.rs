//! Wall-clock stamps in the two forms the public shapes use.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, as RFC 3339 with milliseconds in UTC (`2026-12-03T16:15:36.123Z`).
pub fn iso_now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// `time` as RFC 3339 with milliseconds in UTC, for serde's `serialize_with`.
pub fn serialize_rfc3339<S: serde::Serializer>(
    time: &SystemTime,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_rfc3339_millis(*time))
}

/// A duration as whole milliseconds, for serde's `serialize_with`.
pub fn serialize_millis<S: serde::Serializer>(
    duration: &std::time::Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(duration.as_millis() as u64)
}

/// Now, in milliseconds since the Unix epoch.
pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[derive(serde::Serialize)]
    struct Stamps {
        #[serde(serialize_with = "super::serialize_rfc3339")]
        at: std::time::SystemTime,
        #[serde(serialize_with = "super::serialize_millis")]
        took: Duration,
    }

    #[test]
    fn times_and_durations_serialize_as_the_shapes_say() {
        let stamps = Stamps {
            at: super::UNIX_EPOCH + Duration::from_millis(1_500),
            took: Duration::from_micros(2_500_900),
        };
        assert_eq!(
            serde_json::to_value(stamps).unwrap(),
            serde_json::json!({ "at": "1970-01-01T00:00:01.500Z", "took": 2500 })
        );
    }
}
