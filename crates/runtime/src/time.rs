//! Wall-clock formatting: RFC 3339 with nanoseconds (CRI log lines), IMF-fixdate (HTTP `Date`)
//! and the common log format (access logs of the built-in web servers), all in UTC.
//!
//! Log timestamps are fixed-width (always nine fractional digits), so comparing two of them as
//! strings compares the instants; `since` filtering relies on it.

use std::time::{SystemTime, UNIX_EPOCH};

/// A broken-down UTC time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub nanos: u32,
    /// 0 = Sunday.
    pub weekday: u32,
}

const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

/// Times before the epoch are clamped to it: a clock that far off has bigger problems.
pub(crate) fn civil(t: SystemTime) -> Civil {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    Civil {
        year,
        month: month as u32,
        day: day as u32,
        hour: (rem / 3600) as u32,
        minute: (rem % 3600 / 60) as u32,
        second: (rem % 60) as u32,
        nanos: d.subsec_nanos(),
        // 1970-01-01 was a Thursday.
        weekday: (days + 4).rem_euclid(7) as u32,
    }
}

/// `2006-01-02T15:04:05.000000000Z`: RFC 3339 in UTC with exactly nine fractional digits.
pub fn format_rfc3339_nanos(t: SystemTime) -> String {
    let c = civil(t);
    format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z", c.year, c.month, c.day, c.hour, c.minute, c.second, c.nanos)
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` (RFC 9110 IMF-fixdate).
pub(crate) fn format_http_date(t: SystemTime) -> String {
    let c = civil(t);
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[c.weekday as usize % 7],
        c.day,
        MONTHS[(c.month as usize).saturating_sub(1) % 12],
        c.year,
        c.hour,
        c.minute,
        c.second
    )
}

/// `10/Oct/2000:13:55:36 +0000` (the common log format's time, as nginx and Apache print it).
pub(crate) fn format_clf(t: SystemTime) -> String {
    let c = civil(t);
    format!(
        "{:02}/{}/{:04}:{:02}:{:02}:{:02} +0000",
        c.day,
        MONTHS[(c.month as usize).saturating_sub(1) % 12],
        c.year,
        c.hour,
        c.minute,
        c.second
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    #[test]
    fn rfc3339_is_fixed_width_utc() {
        assert_eq!(format_rfc3339_nanos(at(0, 0)), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(format_rfc3339_nanos(at(1_136_214_245, 5)), "2006-01-02T15:04:05.000000005Z");
        // A leap day and the end of a century year.
        assert_eq!(format_rfc3339_nanos(at(951_782_400, 0)), "2000-02-29T00:00:00.000000000Z");
        assert_eq!(format_rfc3339_nanos(at(4_107_542_399, 999_999_999)), "2100-02-28T23:59:59.999999999Z");
    }

    #[test]
    fn http_and_clf_dates() {
        assert_eq!(format_http_date(at(784_111_777, 0)), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(format_clf(at(971_186_136, 0)), "10/Oct/2000:13:55:36 +0000");
    }

    #[test]
    fn string_order_is_time_order() {
        let a = format_rfc3339_nanos(at(1_700_000_000, 900_000_000));
        let b = format_rfc3339_nanos(at(1_700_000_001, 1));
        assert!(a < b);
    }
}
