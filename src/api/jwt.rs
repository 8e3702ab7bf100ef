//! Gantry's short-lived access JWTs (OSMO's `/api/auth/jwt/access_token`):
//! an access token exchanged for a JWT that every member verifies on its
//! own, as `osmo login --method token` does.
//!
//! Invariants: a JWT is HS256, signed with a key derived from the cluster
//! key that seals credentials (`secrets`), its header's `kid` naming that
//! key, so every member holding the key file verifies it without a
//! round-trip, and a rotated key file still verifies JWTs of the older
//! keys it keeps; issuer and audience are `gantry`; it lives at most
//! [`JWT_LIFETIME_MS`] and never past its access token; it names the
//! access token it came from (by name and creation time), which must still
//! exist (and not have expired) when the JWT is used, so revoking the token
//! revokes its JWTs, and a new token of the same name does not revive them;
//! a server without a cluster key issues none and takes none.

use super::error::ApiError;
use super::params::Params;
use super::AppState;
use crate::clock::now_ms;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use gantry_storage::{ReadView, TokenRecord};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// How long a JWT is good for, at most.
pub const JWT_LIFETIME_MS: i64 = 60 * 60 * 1000;
/// The largest body of a JWT request (an access token in JSON).
const JWT_REQUEST_BYTES_MAX: usize = 16 * 1024;
/// The issuer and audience of Gantry's JWTs.
pub const ISSUER: &str = "gantry";

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    /// The user.
    sub: String,
    /// The user again, where OSMO's CLI looks for a display name.
    name: String,
    /// The access token this JWT was made from, and when that token was
    /// made: a token deleted and made again under the same name does not
    /// bring its predecessor's JWTs back.
    tok: String,
    tci: i64,
    iat: i64,
    exp: i64,
}

fn credential_error(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "CREDENTIAL", message)
}

/// Why a JWT (Gantry's or an IdP's) was refused, in OSMO's words.
pub fn refusal(error: jsonwebtoken::errors::Error) -> ApiError {
    match error.kind() {
        jsonwebtoken::errors::ErrorKind::ExpiredSignature => credential_error("Token is expired"),
        jsonwebtoken::errors::ErrorKind::InvalidAudience => {
            credential_error("Token is not valid: wrong audience")
        }
        jsonwebtoken::errors::ErrorKind::InvalidIssuer => {
            credential_error("Token is not valid: wrong issuer")
        }
        _ => credential_error(format!("Token is not valid: {error}")),
    }
}

/// Whether a bearer secret is a JWT (three base64url parts) rather than an
/// access token (which has no `.`).
pub fn looks_like_jwt(secret: &str) -> bool {
    secret.split('.').count() == 3
}

/// The access token a JWT stands for, once its signature, issuer,
/// audience and expiry check out and the token still exists; and when the
/// JWT was issued, in milliseconds.
pub fn verify(view: &ReadView, jwt: &str) -> Result<(TokenRecord, i64), ApiError> {
    let ring = crate::secrets::ring().ok_or_else(|| {
        credential_error("Token is not valid: this server has no cluster key to check JWTs with")
    })?;
    let header = jsonwebtoken::decode_header(jwt)
        .map_err(|error| credential_error(format!("Token is not valid: {error}")))?;
    let kid = header
        .kid
        .ok_or_else(|| credential_error("Token is not valid: it names no key (kid)"))?;
    let key = ring.jwt_key(&kid).ok_or_else(|| {
        credential_error(format!(
            "Token is not valid: signed with cluster key {kid}, which this server does not hold"
        ))
    })?;
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_issuer(&[ISSUER]);
    validation.set_audience(&[ISSUER]);
    validation.leeway = 0;
    let claims = jsonwebtoken::decode::<Claims>(jwt, &DecodingKey::from_secret(key), &validation)
        .map_err(refusal)?
        .claims;
    let token = view
        .token(&claims.tok)?
        .filter(|token| token.user == claims.sub && token.created == claims.tci)
        .ok_or_else(|| {
            credential_error(format!(
                "Token is not valid: access token '{}' it was made from is revoked",
                claims.tok
            ))
        })?;
    if token.expires.is_some_and(|expires| expires <= now_ms()) {
        return Err(credential_error(format!(
            "Token is expired: token '{}' expired",
            token.name
        )));
    }
    Ok((token, claims.iat.saturating_mul(1000)))
}

/// A JWT for `token`, good until the earlier of an hour from now and the
/// token's own expiry; `(jwt, expires at in seconds)`.
fn issue(token: &TokenRecord) -> Result<(String, i64), ApiError> {
    let ring = crate::secrets::ring().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVER",
            crate::secrets::SecretError::NoKey.to_string(),
        )
    })?;
    let now = now_ms();
    let expires = token.expires.map_or(now + JWT_LIFETIME_MS, |expires| {
        expires.min(now + JWT_LIFETIME_MS)
    });
    let claims = Claims {
        iss: ISSUER.into(),
        aud: ISSUER.into(),
        sub: token.user.clone(),
        name: token.user.clone(),
        tok: token.name.clone(),
        tci: token.created,
        iat: now / 1000,
        exp: expires / 1000,
    };
    let (kid, key) = ring.jwt_signing_key();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.to_string());
    let jwt = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(key)).map_err(
        |error| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "SERVER",
                format!("signing a JWT: {error}"),
            )
        },
    )?;
    Ok((jwt, claims.exp))
}

/// The access token a secret names, if it is valid now.
async fn access_token(state: &AppState, secret: &str) -> Result<TokenRecord, ApiError> {
    let view = state.node.read().await?;
    let token = view
        .token_by_hash(&crate::access_token::hash_token(secret.trim()))?
        .ok_or_else(|| credential_error("Token is not valid"))?;
    if token.expires.is_some_and(|expires| expires <= now_ms()) {
        return Err(credential_error(format!(
            "Token is expired: token '{}' expired",
            token.name
        )));
    }
    Ok(token)
}

fn answer(token: &TokenRecord) -> Result<Json<Value>, ApiError> {
    let (jwt, expires_at) = issue(token)?;
    Ok(Json(
        json!({"token": jwt, "expires_at": expires_at, "error": null}),
    ))
}

/// `POST /api/auth/jwt/access_token` with `{"token": <access token>}`.
pub async fn from_access_token(
    State(state): State<AppState>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    // Read here, not through the workflow module's reader: authentication
    // (which verifies JWTs) sits below the routes.
    let bytes = axum::body::to_bytes(body, JWT_REQUEST_BYTES_MAX)
        .await
        .map_err(|_| {
            ApiError::bad_request(
                "USAGE",
                format!("the request body is larger than {JWT_REQUEST_BYTES_MAX} bytes"),
            )
        })?;
    let request: Value = serde_json::from_slice(&bytes).map_err(|error| {
        ApiError::bad_request("USAGE", format!("the request body is not JSON: {error}"))
    })?;
    let secret = request["token"].as_str().ok_or_else(|| {
        ApiError::bad_request("USAGE", "token: required, the access token to exchange")
    })?;
    answer(&access_token(&state, secret).await?)
}

/// `GET /api/auth/jwt/access_token?access_token=…` (OSMO's deprecated form).
pub async fn from_access_token_query(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let params = Params::parse(query.as_deref());
    let secret = params.get("access_token").ok_or_else(|| {
        ApiError::bad_request(
            "USAGE",
            "access_token: required, the access token to exchange",
        )
    })?;
    answer(&access_token(&state, secret).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwts_are_told_from_access_tokens() {
        assert!(looks_like_jwt("eyJh.eyJz.c2ln"));
        assert!(!looks_like_jwt("Zm9vYmFyYmF6-_"));
    }
}
