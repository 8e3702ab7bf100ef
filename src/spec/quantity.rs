//! Kubernetes-style quantities (`200Gi`, `1.5G`, `1024`) and OSMO durations
//! (`30m`, `8h`, `3600`).
//!
//! Invariants: results are exact integers (bytes, seconds) computed without
//! floating point; fractional byte counts round up; anything negative,
//! malformed or overflowing `u64` is an error message, never a panic.

use regex::Regex;
use std::sync::OnceLock;

fn quantity_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        #[allow(clippy::expect_used)]
        Regex::new(r"^([0-9]+)(?:\.([0-9]+))?(B|Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
            .expect("quantity regex compiles")
    })
}

fn multiplier(unit: &str) -> u128 {
    match unit {
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        // "B" and no unit: plain bytes.
        _ => 1,
    }
}

/// Parses a quantity into bytes.
pub fn parse_quantity(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let caps = quantity_regex()
        .captures(trimmed)
        .ok_or_else(|| format!("invalid quantity {text:?} (expected e.g. 512Mi, 10Gi, 1G)"))?;
    let too_large = || format!("quantity {text:?} is too large");
    let whole = caps.get(1).map_or("", |m| m.as_str());
    let frac = caps.get(2).map_or("", |m| m.as_str());
    let unit = caps.get(3).map_or("", |m| m.as_str());
    // Digits beyond 30 cannot fit u64 bytes with any unit; rejecting them
    // first keeps the u128 arithmetic below from overflowing.
    if whole.trim_start_matches('0').len() > 30 || frac.len() > 30 {
        return Err(too_large());
    }
    let mantissa: u128 = format!("{whole}{frac}").parse().map_err(|_| too_large())?;
    let scale = 10u128.pow(frac.len() as u32);
    let product = mantissa
        .checked_mul(multiplier(unit))
        .ok_or_else(too_large)?;
    let bytes = product.div_ceil(scale);
    u64::try_from(bytes).map_err(|_| too_large())
}

/// Parses `<int><s|m|h|d>` or plain integer seconds: the configs' parser,
/// which the state machine uses too (it reads durations from replicated
/// configs), so specs, the API and apply never disagree on one.
pub use gantry_storage::config::parse_duration_seconds as parse_duration;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        let table: &[(&str, Option<u64>)] = &[
            ("1024", Some(1024)),
            ("1B", Some(1)),
            ("1Ki", Some(1024)),
            ("200Gi", Some(200 << 30)),
            ("1.5Gi", Some(3 << 29)),
            ("1k", Some(1000)),
            ("2M", Some(2_000_000)),
            ("1G", Some(1_000_000_000)),
            ("1T", Some(1_000_000_000_000)),
            ("1Pi", Some(1 << 50)),
            ("15Ei", Some(15 << 60)),
            ("16Ei", None),
            ("0.5", Some(1)),
            ("-1Gi", None),
            ("1Gb", None),
            ("", None),
            ("abc", None),
            ("1e3", None),
            ("99999999999999999999999999999999999999999", None),
        ];
        for (text, expected) in table {
            assert_eq!(parse_quantity(text).ok(), *expected, "{text}");
        }
    }

    #[test]
    fn durations() {
        let table: &[(&str, Option<u64>)] = &[
            ("30s", Some(30)),
            ("10m", Some(600)),
            ("8h", Some(28_800)),
            ("2d", Some(172_800)),
            ("3600", Some(3600)),
            ("1h30m", None),
            ("h", None),
            ("5w", None),
            ("-5s", None),
            ("1.5h", None),
            ("", None),
            ("99999999999999999999d", None),
            ("9999999999999999d", None),
        ];
        for (text, expected) in table {
            assert_eq!(parse_duration(text).ok(), *expected, "{text}");
        }
    }
}
