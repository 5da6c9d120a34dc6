//! Currencies and decimal money strings, held as integer minor units.

/// Largest unit price in minor units; with 1000 units × 100 lines the total stays below 10^17.
pub const MAX_UNIT_PRICE_MINOR: i64 = 999_999_999_999;

/// The accepted currencies and their ISO 4217 minor-unit digits.
const CURRENCIES: [(&str, u8); 28] = [
    ("AUD", 2),
    ("BHD", 3),
    ("BRL", 2),
    ("CAD", 2),
    ("CHF", 2),
    ("CNY", 2),
    ("CZK", 2),
    ("DKK", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("HKD", 2),
    ("HUF", 2),
    ("INR", 2),
    ("ISK", 0),
    ("JOD", 3),
    ("JPY", 0),
    ("KRW", 0),
    ("KWD", 3),
    ("MXN", 2),
    ("NOK", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PLN", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("TND", 3),
    ("USD", 2),
    ("ZAR", 2),
];

/// An accepted ISO 4217 currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Currency {
    code: &'static str,
    exponent: u8,
}

impl Currency {
    /// Parses a currency code from the accepted set.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        if s.len() != 3 || !s.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err("must be an ISO 4217 code of 3 uppercase letters");
        }
        CURRENCIES
            .iter()
            .find(|(code, _)| *code == s)
            .map(|&(code, exponent)| Self { code, exponent })
            .ok_or("is not an accepted currency")
    }

    /// Every accepted code, alphabetically.
    pub fn codes() -> impl Iterator<Item = &'static str> {
        CURRENCIES.iter().map(|(code, _)| *code)
    }

    /// The three-letter code.
    pub fn code(self) -> &'static str {
        self.code
    }

    /// Digits after the decimal point (0 for JPY, 2 for EUR, 3 for BHD).
    pub fn exponent(self) -> u8 {
        self.exponent
    }
}

/// Parses a non-negative decimal string with exactly the currency's minor-unit digits
/// ("9.99" in EUR, "1200" in JPY) into minor units.
pub fn parse_minor(s: &str, currency: Currency) -> Result<i64, String> {
    let exp = usize::from(currency.exponent());
    let shape = if exp == 0 {
        "a whole number such as \"1200\"".to_string()
    } else {
        format!(
            "a decimal with exactly {exp} digit{} after the point, such as \"9.{}\"",
            if exp == 1 { "" } else { "s" },
            "9".repeat(exp)
        )
    };
    let wrong = || format!("must be {shape} for {}", currency.code());
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) if exp > 0 && f.len() == exp => (i, f),
        None if exp == 0 => (s, ""),
        _ => return Err(wrong()),
    };
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || (exp > 0 && !digits(frac)) || (int.len() > 1 && int.starts_with('0')) {
        return Err(wrong());
    }
    let too_large = || {
        format!(
            "must be at most {}",
            format_minor(MAX_UNIT_PRICE_MINOR, currency)
        )
    };
    let mut minor: i64 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        minor = minor
            .checked_mul(10)
            .and_then(|m| m.checked_add(i64::from(b - b'0')))
            .ok_or_else(too_large)?;
    }
    if minor > MAX_UNIT_PRICE_MINOR {
        return Err(too_large());
    }
    Ok(minor)
}

/// Formats minor units with the currency's digits: 999 EUR → "9.99", 1200 JPY → "1200".
pub fn format_minor(minor: i64, currency: Currency) -> String {
    let exp = u32::from(currency.exponent());
    if exp == 0 {
        return minor.to_string();
    }
    let scale = 10_i64.pow(exp);
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    let scale = scale.unsigned_abs();
    format!(
        "{sign}{}.{:0width$}",
        abs / scale,
        abs % scale,
        width = exp as usize
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(code: &str) -> Currency {
        Currency::parse(code).unwrap()
    }

    #[test]
    fn currencies() {
        assert_eq!(c("JPY").exponent(), 0);
        assert_eq!(c("BHD").exponent(), 3);
        assert!(Currency::parse("eur").is_err());
        assert!(Currency::parse("XXX").is_err());
        assert!(Currency::parse("EURO").is_err());
    }

    #[test]
    fn parses_exact_minor_digits() {
        assert_eq!(parse_minor("9.99", c("EUR")), Ok(999));
        assert_eq!(parse_minor("0.00", c("EUR")), Ok(0));
        assert_eq!(parse_minor("1200", c("JPY")), Ok(1200));
        assert_eq!(parse_minor("10.000", c("BHD")), Ok(10_000));
        for bad in [
            "9.9", "9.999", "9", ".99", "09.99", "-1.00", "+1.00", "1,00", "1.0a", "",
        ] {
            assert!(parse_minor(bad, c("EUR")).is_err(), "{bad} accepted");
        }
        for bad in ["12.00", "012", "1e3"] {
            assert!(parse_minor(bad, c("JPY")).is_err(), "{bad} accepted");
        }
        assert!(parse_minor("9999999999.99", c("EUR")).is_ok());
        assert!(parse_minor("10000000000.00", c("EUR")).is_err());
        assert!(parse_minor("99999999999999999999999.00", c("EUR")).is_err());
    }

    #[test]
    fn formats_round_trip() {
        assert_eq!(format_minor(999, c("EUR")), "9.99");
        assert_eq!(format_minor(5, c("EUR")), "0.05");
        assert_eq!(format_minor(1200, c("JPY")), "1200");
        assert_eq!(format_minor(10_000, c("BHD")), "10.000");
        for s in ["0.01", "123.45", "9999999999.99"] {
            assert_eq!(format_minor(parse_minor(s, c("USD")).unwrap(), c("USD")), s);
        }
    }
}
