//! The wall clock, read by IO layers only: the sans-IO cores get time as an argument.

use listener_core::UnixMillis;

/// Now, in milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now() -> UnixMillis {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    UnixMillis(u64::try_from(ms).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    #[test]
    fn now_is_after_2020() {
        assert!(super::now().0 > 1_577_836_800_000);
    }
}
