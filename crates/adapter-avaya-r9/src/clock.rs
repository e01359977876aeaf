//! [`PbxClock`]: SMDR's local wall-clock times → instants, in the PBX's IANA time zone.
//!
//! The IP Office writes `Call Start` in its own local time, daylight saving included, without
//! an offset. Two local times need a rule:
//!
//! - **a gap** (clocks go forward: `01:30` does not exist in London on the last Sunday of
//!   March): the time is read with the offset before the gap, as RFC 5545 and Temporal's
//!   "compatible" do (`01:30` → `02:30 BST`). A PBX writes such a time only when its clock was
//!   not adjusted yet, and this reading is then exactly right;
//! - **a fold** (clocks go back: `01:30` happens twice on the last Sunday of October): the
//!   later of the two instants that is not after the record's arrival (plus
//!   [`FOLD_TOLERANCE_MS`] for a PBX clock that runs ahead), else the earlier one. A record
//!   arrives when its segment ends, so a call started in the second `01:30` can only arrive
//!   after it; one started in the first `01:30` and delivered during the first hour can only
//!   be the earlier. Only a record replayed more than an hour late (after an outage spanning
//!   the fold) can be read an hour late.

use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, TimeZone};
use listener_core::UnixMillis;

use crate::smdr::CallStart;

/// How far a fold's later reading may lie after the arrival time and still be chosen.
pub const FOLD_TOLERANCE_MS: u64 = 10 * 60 * 1000;

/// How a local time was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// The local time exists once.
    Unique,
    /// The local time fell in a gap (clocks went forward).
    Gap,
    /// The local time happened twice; the earlier instant was chosen.
    FoldEarlier,
    /// The local time happened twice; the later instant was chosen.
    FoldLater,
}

/// The PBX's time zone.
#[derive(Debug, Clone)]
pub struct PbxClock {
    name: String,
    tz: TimeZone,
}

/// A time zone name that the time zone database does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown time zone {name:?} (an IANA name such as \"Europe/London\"): {reason}")]
pub struct UnknownTimeZone {
    /// The name given.
    pub name: String,
    /// The database's answer.
    pub reason: String,
}

impl PbxClock {
    /// The clock of an IANA zone (`Europe/London`, `America/New_York`, `UTC`).
    pub fn new(name: &str) -> Result<PbxClock, UnknownTimeZone> {
        let tz =
            jiff::tz::db().get(name).map_err(|e| UnknownTimeZone { name: name.to_owned(), reason: e.to_string() })?;
        Ok(PbxClock { name: name.to_owned(), tz })
    }

    /// UTC (tests).
    pub fn utc() -> PbxClock {
        PbxClock { name: "UTC".into(), tz: TimeZone::UTC }
    }

    /// The zone's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The instant of a local `Call Start` that arrived at `arrival`. `None` only for a date
    /// the calendar does not have (30 February).
    pub fn instant(&self, start: &CallStart, arrival: UnixMillis) -> Option<(UnixMillis, Reading)> {
        let dt = DateTime::new(start.year, start.month, start.day, start.hour, start.minute, start.second, 0).ok()?;
        let ambiguous = self.tz.to_ambiguous_timestamp(dt);
        let to_ms = |offset: jiff::tz::Offset| -> Option<UnixMillis> {
            let ts = offset.to_timestamp(dt).ok()?;
            u64::try_from(ts.as_millisecond()).ok().map(UnixMillis)
        };
        match ambiguous.offset() {
            AmbiguousOffset::Unambiguous { offset } => Some((to_ms(offset)?, Reading::Unique)),
            AmbiguousOffset::Gap { before, .. } => Some((to_ms(before)?, Reading::Gap)),
            AmbiguousOffset::Fold { before, after } => {
                let earlier = to_ms(before)?;
                let later = to_ms(after)?;
                if later.0 <= arrival.0.saturating_add(FOLD_TOLERANCE_MS) {
                    Some((later, Reading::FoldLater))
                } else {
                    Some((earlier, Reading::FoldEarlier))
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn start(y: i16, mo: i8, d: i8, h: i8, mi: i8, s: i8) -> CallStart {
        CallStart { year: y, month: mo, day: d, hour: h, minute: mi, second: s, has_seconds: true }
    }

    /// Milliseconds of a UTC time, by jiff (independent of the code under test's zone lookup).
    fn utc(y: i16, mo: i8, d: i8, h: i8, mi: i8, s: i8) -> u64 {
        let ts = DateTime::new(y, mo, d, h, mi, s, 0).unwrap().to_zoned(TimeZone::UTC).unwrap().timestamp();
        ts.as_millisecond() as u64
    }

    #[test]
    fn winter_and_summer_time_in_london() {
        let london = PbxClock::new("Europe/London").unwrap();
        let far = UnixMillis(u64::MAX / 2);
        assert_eq!(
            london.instant(&start(2024, 1, 15, 9, 0, 0), far),
            Some((UnixMillis(utc(2024, 1, 15, 9, 0, 0)), Reading::Unique))
        );
        assert_eq!(
            london.instant(&start(2024, 7, 15, 9, 0, 0), far),
            Some((UnixMillis(utc(2024, 7, 15, 8, 0, 0)), Reading::Unique))
        );
    }

    #[test]
    fn a_time_in_the_spring_gap_reads_with_the_offset_before_it() {
        // 2024-03-31: 01:00 GMT becomes 02:00 BST; 01:30 does not exist.
        let london = PbxClock::new("Europe/London").unwrap();
        let (at, reading) = london.instant(&start(2024, 3, 31, 1, 30, 0), UnixMillis(u64::MAX / 2)).unwrap();
        assert_eq!(reading, Reading::Gap);
        assert_eq!(at.0, utc(2024, 3, 31, 1, 30, 0));
    }

    #[test]
    fn a_time_in_the_autumn_fold_is_chosen_by_its_arrival() {
        // 2024-10-27: 02:00 BST becomes 01:00 GMT; 01:30 happens at 00:30 UTC and at 01:30 UTC.
        let london = PbxClock::new("Europe/London").unwrap();
        let first = utc(2024, 10, 27, 0, 30, 0);
        let second = utc(2024, 10, 27, 1, 30, 0);
        let s = start(2024, 10, 27, 1, 30, 0);
        // Arrived during the first 01:30 hour: only the earlier reading can be.
        assert_eq!(london.instant(&s, UnixMillis(first + 60_000)), Some((UnixMillis(first), Reading::FoldEarlier)));
        // Arrived during the second: the later one.
        assert_eq!(london.instant(&s, UnixMillis(second + 90_000)), Some((UnixMillis(second), Reading::FoldLater)));
        // A PBX clock a few minutes ahead still gets the later reading.
        assert_eq!(london.instant(&s, UnixMillis(second - 120_000)), Some((UnixMillis(second), Reading::FoldLater)));
    }

    #[test]
    fn unknown_zones_and_impossible_dates() {
        assert!(PbxClock::new("Europe/Atlantis").unwrap_err().to_string().contains("Europe/Atlantis"));
        let utc_clock = PbxClock::utc();
        assert_eq!(utc_clock.instant(&start(2024, 2, 30, 0, 0, 0), UnixMillis(0)), None);
        assert_eq!(PbxClock::new("America/New_York").unwrap().name(), "America/New_York");
    }
}
