//! Ages as upstream prints them: `k8s.io/apimachinery/pkg/util/duration.HumanDuration` and the
//! printers' `translateTimestampSince`.

use jiff::Timestamp;

const NANOS_PER_SEC: i128 = 1_000_000_000;

/// `duration.HumanDuration`: ~2–3 significant figures (`45s`, `7m32s`, `117m`, `5h30m`, `20h`,
/// `3d5h`, `11d`, `2y30d`, `9y`).
pub fn human_duration(d: std::time::Duration) -> String {
    human_duration_nanos(d.as_nanos() as i128)
}

/// [`human_duration`] for a signed duration in nanoseconds: up to one second in the future
/// reads `0s` (clock skew), further in the future `<invalid>`.
pub(crate) fn human_duration_nanos(nanos: i128) -> String {
    // Go: int(d.Seconds()) truncates toward zero.
    let seconds = nanos / NANOS_PER_SEC;
    if seconds < -1 {
        return "<invalid>".to_string();
    } else if seconds < 0 {
        return "0s".to_string();
    } else if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        if s == 0 {
            return format!("{minutes}m");
        }
        return format!("{minutes}m{s}s");
    } else if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        if m == 0 {
            return format!("{hours}h");
        }
        format!("{hours}h{m}m")
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        let h = hours % 24;
        if h == 0 {
            return format!("{}d", hours / 24);
        }
        format!("{}d{h}h", hours / 24)
    } else if hours < 24 * 365 * 2 {
        format!("{}d", hours / 24)
    } else if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        if dy == 0 {
            return format!("{}y", hours / 24 / 365);
        }
        format!("{}y{dy}d", hours / 24 / 365)
    } else {
        format!("{}y", hours / 24 / 365)
    }
}

/// Parses an RFC 3339 timestamp (`metav1.Time` or `MicroTime`); `None` when absent, unparsable
/// or Go's zero time (which upstream treats as unset).
pub(crate) fn parse_time(ts: Option<&str>) -> Option<Timestamp> {
    let t: Timestamp = ts?.parse().ok()?;
    // 0001-01-01T00:00:00Z
    (t.as_second() != -62_135_596_800).then_some(t)
}

/// `translateTimestampSince`: the age of a timestamp at `now`, `<unknown>` when missing.
pub fn translate_timestamp_since(ts: Option<&str>, now: Timestamp) -> String {
    match parse_time(ts) {
        Some(t) => since(t, now),
        None => "<unknown>".to_string(),
    }
}

pub(crate) fn since(t: Timestamp, now: Timestamp) -> String {
    human_duration_nanos(now.as_nanosecond() - t.as_nanosecond())
}
