//! RFC 3339 timestamps for [`Millis`] (milliseconds since the Unix epoch).
//!
//! The wire shows times as RFC 3339 strings (`2025-05-01T12:00:00.250Z`), the engine keeps
//! them as integers. This module converts between the two with the civil-calendar
//! arithmetic of Howard Hinnant's `days_from_civil`, so the wire crate needs no date
//! library (the CNI plugin links it and must stay small and fast to start).
//! Times before 1970 are out of range: nothing kipam records is older than the epoch.

use kipam_core::Millis;
use thiserror::Error;

/// Why a string is not an RFC 3339 timestamp kipam accepts.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("{input:?} is not an RFC 3339 time (like 2025-05-01T12:00:00Z): {reason}")]
pub struct TimeError {
    /// What was given.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Formats `ms` as UTC with millisecond precision: `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format(ms: Millis) -> String {
    let secs = (ms / 1000) as i64;
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60,
        ms % 1000
    )
}

/// Parses an RFC 3339 date-time (`T` or space between date and time, `Z` or `±HH:MM`,
/// optional fraction; digits past milliseconds are truncated).
pub fn parse(input: &str) -> Result<Millis, TimeError> {
    let err = |reason| TimeError {
        input: input.to_string(),
        reason,
    };
    let b = input.as_bytes();
    if b.len() < 20 {
        return Err(err("too short"));
    }
    let num = |from: usize, to: usize| -> Result<u32, TimeError> {
        let s = input.get(from..to).ok_or_else(|| err("not ASCII"))?;
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return Err(err("expected digits"));
        }
        s.parse().map_err(|_| err("expected digits"))
    };
    let year = i64::from(num(0, 4)?);
    let (month, day) = (num(5, 7)?, num(8, 10)?);
    if b[4] != b'-' || b[7] != b'-' {
        return Err(err("the date must be YYYY-MM-DD"));
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return Err(err("expected T between date and time"));
    }
    let (hour, min, sec) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if b[13] != b':' || b[16] != b':' {
        return Err(err("the time must be HH:MM:SS"));
    }
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return Err(err("no such date"));
    }
    // 60 is a leap second: RFC 3339 allows it; it counts as the next second's start.
    if hour > 23 || min > 59 || sec > 60 {
        return Err(err("no such time of day"));
    }
    let mut i = 19;
    let mut frac_ms = 0u64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 3 {
                frac_ms = frac_ms * 10 + u64::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return Err(err("expected digits after the decimal point"));
        }
        for _ in (i - start)..3 {
            frac_ms *= 10;
        }
    }
    let offset_secs: i64 = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let (oh, om) = (num(i + 1, i + 3)?, num(i + 4, i + 6)?);
            if oh > 23 || om > 59 {
                return Err(err("no such offset"));
            }
            let o = i64::from(oh * 3600 + om * 60);
            if sign == b'+' { o } else { -o }
        }
        _ => return Err(err("expected Z or an offset like +02:00 at the end")),
    };
    let secs = days_from_civil(year, month, day) * 86_400 + i64::from(hour * 3600 + min * 60 + sec)
        - offset_secs;
    let secs = u64::try_from(secs).map_err(|_| err("before 1970"))?;
    Ok(secs * 1000 + frac_ms)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(format(1_746_100_800_250), "2025-05-01T12:00:00.250Z");
        assert_eq!(format(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
    }

    #[test]
    fn parses_what_it_formats() {
        for ms in [
            0,
            1,
            999,
            86_399_999,
            951_782_400_000,
            1_746_100_800_250,
            4_107_542_399_999,
        ] {
            assert_eq!(parse(&format(ms)), Ok(ms), "{ms}");
        }
        let mut ms = 0u64;
        while ms < 10_000_000_000_000 {
            assert_eq!(parse(&format(ms)), Ok(ms));
            ms += 7_777_777_777;
        }
    }

    #[test]
    fn parses_offsets_and_fractions() {
        assert_eq!(parse("2025-05-01T14:00:00+02:00"), Ok(1_746_100_800_000));
        assert_eq!(parse("2025-05-01T07:30:00-04:30"), Ok(1_746_100_800_000));
        assert_eq!(parse("2025-05-01t12:00:00.25z"), Ok(1_746_100_800_250));
        assert_eq!(
            parse("2025-05-01 12:00:00.123456789Z"),
            Ok(1_746_100_800_123)
        );
        assert_eq!(parse("2016-12-31T23:59:60Z"), Ok(1_483_228_800_000));
    }

    #[test]
    fn refuses_malformed() {
        for bad in [
            "",
            "2025-05-01",
            "2025-05-01T12:00:00",
            "2025-13-01T12:00:00Z",
            "2025-02-29T12:00:00Z",
            "2025-05-01T24:00:00Z",
            "2025-05-01T12:00:00.Z",
            "2025-05-01T12:00:00+2:00",
            "2025/05/01T12:00:00Z",
            "1969-12-31T23:59:59Z",
            "2025-05-01T12:00:00Zjunk",
            "２０２５-05-01T12:00:00Z",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
