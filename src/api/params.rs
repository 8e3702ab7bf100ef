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
