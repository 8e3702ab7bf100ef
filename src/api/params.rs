//! Query-string parsing with OSMO's conventions: repeated keys and
//! comma-separated values both build lists; booleans accept true/false/1/0.
//!
//! Invariant: a malformed value is a 400 naming the parameter, never a
//! silent default.

use super::error::ApiError;

pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    pub fn parse(raw: Option<&str>) -> Params {
        let pairs = raw
            .map(|raw| {
                form_urlencoded::parse(raw.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default();
        Params { pairs }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Every value of a repeated key, with comma-separated values split.
    pub fn list(&self, name: &str) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|(key, _)| key == name)
            .flat_map(|(_, value)| value.split(','))
            .map(str::trim)
            .filter(|value| !value.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Every value of a repeated key, as given (values may contain commas).
    pub fn all(&self, name: &str) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
            .collect()
    }

    /// `retry_id`, which must fit a task's retry counter.
    pub fn retry_id(&self) -> Result<Option<u32>, ApiError> {
        self.number("retry_id")?
            .map(|retry| {
                u32::try_from(retry)
                    .map_err(|_| ApiError::bad_request("USAGE", "retry_id is too large"))
            })
            .transpose()
    }

    pub fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.get(name).map(|value| value.to_ascii_lowercase()) {
            None => Ok(false),
            Some(value) if value.is_empty() || value == "true" || value == "1" => Ok(true),
            Some(value) if value == "false" || value == "0" => Ok(false),
            Some(value) => Err(ApiError::bad_request(
                "USAGE",
                format!("query parameter '{name}' must be true or false, not '{value}'"),
            )),
        }
    }

    /// A point in time, as OSMO's CLI and FastAPI accept it: naive
    /// `YYYY-MM-DDTHH:MM:SS[.ffffff]` (UTC, `T` or a space), an RFC 3339
    /// time with its offset, or a date `YYYY-MM-DD` (midnight UTC); as Unix
    /// milliseconds.
    pub fn time(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.get(name)
            .map(|value| {
                parse_time(value.trim()).ok_or_else(|| {
                    ApiError::bad_request(
                        "USAGE",
                        format!("query parameter '{name}' must be a time (YYYY-MM-DDTHH:MM:SS in UTC, an RFC 3339 time or YYYY-MM-DD), not '{value}'"),
                    )
                })
            })
            .transpose()
    }

    pub fn number(&self, name: &str) -> Result<Option<u64>, ApiError> {
        self.get(name)
            .map(|value| {
                value.trim().parse::<u64>().map_err(|_| {
                    ApiError::bad_request("USAGE", format!("query parameter '{name}' must be a non-negative integer, not '{value}'"))
                })
            })
            .transpose()
    }
}

/// See [`Params::time`].
fn parse_time(text: &str) -> Option<i64> {
    if let Ok(time) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(time.timestamp_millis());
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M:%S%.f",
    ] {
        if let Ok(time) = chrono::NaiveDateTime::parse_from_str(text, format) {
            return Some(time.and_utc().timestamp_millis());
        }
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|date| date.and_hms_opt(0, 0, 0))
        .map(|time| time.and_utc().timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_the_forms_osmo_sends_them() {
        let params = Params::parse(Some(
            "a=2023-05-03T00:00:00&b=2023-05-03&c=2023-05-03T02:00:00%2B02:00&d=2023-05-03%2000:00:00.250&e=May+3&f=2023-05-03T00:00:00Z",
        ));
        let midnight = 1_683_072_000_000;
        assert_eq!(params.time("a").unwrap(), Some(midnight));
        assert_eq!(params.time("b").unwrap(), Some(midnight));
        assert_eq!(params.time("c").unwrap(), Some(midnight));
        assert_eq!(params.time("d").unwrap(), Some(midnight + 250));
        assert_eq!(params.time("f").unwrap(), Some(midnight));
        assert_eq!(params.time("none").unwrap(), None);
        let error = params.time("e").unwrap_err();
        assert!(
            error.message.contains("'e' must be a time"),
            "{}",
            error.message
        );
    }
}
