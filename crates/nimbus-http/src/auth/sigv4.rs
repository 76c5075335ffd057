//! AWS Signature Version 4, as the AWS SDKs sign a Lambda request (and a client signs an API
//! Gateway one, scoped to `execute-api`): the `Authorization` header read, the canonical
//! request rebuilt from what arrived, and the signature checked with the key's secret.
//!
//! The canonical request is the method; the path with each byte outside `A-Z a-z 0-9 - _ . ~
//! /` percent-encoded (again: the path arrives encoded once); the query's pairs decoded,
//! encoded strictly and sorted; the signed headers, lower-case, their values trimmed with
//! inner runs of spaces made one, in the order signed; the signed header names; and the hex
//! SHA-256 of the body.

use std::time::SystemTime;

use hmac::{Hmac, KeyInit, Mac};
use http::HeaderMap;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};

use super::amz_date;

/// The only algorithm the SDKs sign Lambda requests with.
pub(crate) const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// How far a request's `X-Amz-Date` may be from the server's clock, either way.
pub(crate) const MAX_SKEW_SECS: u64 = 5 * 60;

/// The service a Lambda request's credential is scoped to.
pub(crate) const LAMBDA: &str = "lambda";

/// The service a request to an API Gateway route with IAM authorization is scoped to.
pub(crate) const EXECUTE_API: &str = "execute-api";

/// Bytes percent-encoded in a query key or value: all but the unreserved ones.
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Bytes percent-encoded in the canonical path: as in a query, but `/` stays.
const PATH: &AsciiSet = &QUERY.remove(b'/');

/// An `Authorization` header:
/// `AWS4-HMAC-SHA256 Credential=<key>/<date>/<region>/<service>/aws4_request,
/// SignedHeaders=<a;b>, Signature=<hex>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Authorization<'a> {
    pub(crate) access_key: &'a str,
    /// The scope's date, `YYYYMMDD`.
    pub(crate) date: &'a str,
    pub(crate) region: &'a str,
    pub(crate) service: &'a str,
    pub(crate) terminal: &'a str,
    /// As given: lower-case names joined by `;`.
    pub(crate) signed_headers: &'a str,
    pub(crate) signature: &'a str,
}

/// Why a signed request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SignatureError {
    /// The header lacks a part, or the request a date (Lambda: `IncompleteSignatureException`).
    Incomplete(String),
    /// The credential's scope, or the signed headers, are not acceptable
    /// (`InvalidSignatureException`).
    Invalid(String),
    /// The request's time is too far from the server's (`InvalidSignatureException`).
    Expired(String),
    /// The signature is not the one the secret gives (`InvalidSignatureException`).
    Mismatch,
}

/// Reads an `Authorization` header.
///
/// # Errors
///
/// [`SignatureError::Incomplete`] naming what is missing or malformed.
pub(crate) fn parse(header: &str) -> Result<Authorization<'_>, SignatureError> {
    let Some(rest) = header
        .strip_prefix(ALGORITHM)
        .and_then(|r| r.strip_prefix(' '))
    else {
        return Err(SignatureError::Incomplete(format!(
            "Unsupported authorization type: only {ALGORITHM} is accepted"
        )));
    };
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (name, value) = part.trim().split_once('=').unwrap_or((part.trim(), ""));
        match name {
            "Credential" => credential = Some(value),
            "SignedHeaders" => signed_headers = Some(value),
            "Signature" => signature = Some(value),
            _ => {}
        }
    }
    let missing: Vec<&str> = [
        ("Credential", credential),
        ("SignedHeaders", signed_headers),
        ("Signature", signature),
    ]
    .iter()
    .filter(|(_, value)| value.is_none_or(str::is_empty))
    .map(|(name, _)| *name)
    .collect();
    if !missing.is_empty() {
        let needs: Vec<String> = missing
            .iter()
            .map(|name| format!("Authorization header requires '{name}' parameter."))
            .collect();
        return Err(SignatureError::Incomplete(needs.join(" ")));
    }
    let (Some(credential), Some(signed_headers), Some(signature)) =
        (credential, signed_headers, signature)
    else {
        return Err(SignatureError::Incomplete("incomplete signature".into()));
    };
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key, date, region, service, terminal] = scope[..] else {
        return Err(SignatureError::Incomplete(format!(
            "Credential should be of the form <access key>/<date>/<region>/<service>/\
             aws4_request, not '{credential}'."
        )));
    };
    if access_key.is_empty() {
        return Err(SignatureError::Incomplete(
            "Credential names no access key.".into(),
        ));
    }
    Ok(Authorization {
        access_key,
        date,
        region,
        service,
        terminal,
        signed_headers,
        signature,
    })
}

/// A request as it arrived, for its canonical form.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SignedRequest<'a> {
    pub(crate) method: &'a str,
    /// The path as sent (percent-encoded once).
    pub(crate) path: &'a str,
    /// The query as sent, without `?`.
    pub(crate) query: Option<&'a str>,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) payload: &'a [u8],
}

/// Checks `request`'s signature by `authorization` with `secret`, for the runtime's `region`
/// and `service` (`lambda`, `execute-api`), at `now`.
///
/// # Errors
///
/// See [`SignatureError`].
pub(crate) fn verify_scoped(
    request: &SignedRequest<'_>,
    authorization: &Authorization<'_>,
    secret: &str,
    region: &str,
    service: &str,
    now: SystemTime,
) -> Result<(), SignatureError> {
    if authorization.terminal != "aws4_request" {
        return Err(SignatureError::Invalid(format!(
            "Credential should be scoped with a valid terminator: 'aws4_request', not '{}'.",
            authorization.terminal
        )));
    }
    if authorization.service != service {
        return Err(SignatureError::Invalid(format!(
            "Credential should be scoped to correct service: '{service}'."
        )));
    }
    if authorization.region != region {
        return Err(SignatureError::Invalid(format!(
            "Credential should be scoped to a valid region, not '{}'.",
            authorization.region
        )));
    }
    let signed: Vec<&str> = authorization.signed_headers.split(';').collect();
    // Unsigned, the host could be changed, and the date replayed: both must be signed.
    for required in ["host", "x-amz-date"] {
        if !signed.contains(&required) {
            return Err(SignatureError::Invalid(format!(
                "'{required}' must be a 'SignedHeader' in the AWS Authorization."
            )));
        }
    }
    let amz_date = request
        .headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            SignatureError::Incomplete(
                "Authorization header requires existence of a 'X-Amz-Date' header.".into(),
            )
        })?;
    let at = amz_date::parse(amz_date).ok_or_else(|| {
        SignatureError::Incomplete(format!(
            "X-Amz-Date must be in the ISO-8601 basic format YYYYMMDD'T'HHMMSS'Z', not \
             '{amz_date}'."
        ))
    })?;
    if authorization.date != &amz_date[..8] {
        return Err(SignatureError::Invalid(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date \
             from HTTP: '{}' != '{}', from '{amz_date}'.",
            authorization.date,
            &amz_date[..8]
        )));
    }
    let canonical = canonical_request(request, authorization.signed_headers);
    let scope = format!(
        "{}/{}/{}/{}",
        authorization.date, authorization.region, authorization.service, authorization.terminal
    );
    let to_sign = string_to_sign(amz_date, &scope, &canonical);
    let key = signing_key(
        secret,
        authorization.date,
        authorization.region,
        authorization.service,
    );
    let given = hex::decode(authorization.signature).map_err(|_| SignatureError::Mismatch)?;
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(&key).map_err(|_| SignatureError::Mismatch)?;
    mac.update(to_sign.as_bytes());
    // Constant time: the comparison tells nothing of how much of a guess was right.
    mac.verify_slice(&given)
        .map_err(|_| SignatureError::Mismatch)?;
    check_time(amz_date, at, now)
}

/// Whether `at` (from the request's `amz_date`) is within [`MAX_SKEW_SECS`] of `now`.
fn check_time(amz_date: &str, at: u64, now: SystemTime) -> Result<(), SignatureError> {
    let now_secs = amz_date::now_secs(now);
    let skew = std::time::Duration::from_secs(MAX_SKEW_SECS);
    if at + MAX_SKEW_SECS < now_secs {
        let earliest = amz_date::format(now.checked_sub(skew).unwrap_or(now));
        return Err(SignatureError::Expired(format!(
            "Signature expired: {amz_date} is now earlier than {earliest} ({} - 5 min.)",
            amz_date::format(now)
        )));
    }
    if at > now_secs + MAX_SKEW_SECS {
        return Err(SignatureError::Expired(format!(
            "Signature not yet current: {amz_date} is still later than {} ({} + 5 min.)",
            amz_date::format(now + skew),
            amz_date::format(now)
        )));
    }
    Ok(())
}

/// The canonical request of `request`, signed over the headers `signed_headers`.
pub(crate) fn canonical_request(request: &SignedRequest<'_>, signed_headers: &str) -> String {
    let path = if request.path.is_empty() {
        "/"
    } else {
        request.path
    };
    let mut canonical = String::with_capacity(256);
    canonical.push_str(&request.method.to_ascii_uppercase());
    canonical.push('\n');
    canonical.extend(utf8_percent_encode(path, PATH));
    canonical.push('\n');
    canonical.push_str(&canonical_query(request.query.unwrap_or("")));
    canonical.push('\n');
    for name in signed_headers.split(';') {
        let values: Vec<String> = request
            .headers
            .get_all(name)
            .iter()
            .map(|v| {
                String::from_utf8_lossy(v.as_bytes())
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        canonical.push_str(name);
        canonical.push(':');
        canonical.push_str(&values.join(","));
        canonical.push('\n');
    }
    canonical.push('\n');
    canonical.push_str(signed_headers);
    canonical.push('\n');
    canonical.push_str(&hex::encode(Sha256::digest(request.payload)));
    canonical
}

/// The query's pairs decoded (`+` as a space, as the SDKs' form encoding means it), encoded
/// strictly, sorted and joined.
fn canonical_query(query: &str) -> String {
    let encode = |raw: &str| -> String {
        let spaced = raw.replace('+', " ");
        let decoded = percent_decode_str(&spaced).collect::<Vec<u8>>();
        percent_encoding::percent_encode(&decoded, QUERY).to_string()
    };
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (encode(key), encode(value))
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// What is signed: the algorithm, the time, the scope and the canonical request's hash.
pub(crate) fn string_to_sign(amz_date: &str, scope: &str, canonical: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    )
}

/// The signing key: HMAC-SHA256 of the scope's parts in turn, keyed first by `AWS4<secret>`.
pub(crate) fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let mut key = format!("AWS4{secret}").into_bytes();
    for part in [date, region, service, "aws4_request"] {
        key = hmac_sha256(&key, part.as_bytes());
    }
    key
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes a key of any length: `new_from_slice` cannot fail.
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(key) else {
        return Vec::new();
    };
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// The signature of a Lambda `request` by the key `secret` at `amz_date`, as a client
/// computes it (for tests).
#[cfg(test)]
pub(crate) fn sign(
    request: &SignedRequest<'_>,
    signed_headers: &str,
    secret: &str,
    amz_date: &str,
    region: &str,
) -> String {
    sign_scoped(request, signed_headers, secret, amz_date, region, LAMBDA)
}

/// As [`sign`], for `service`.
#[cfg(test)]
pub(crate) fn sign_scoped(
    request: &SignedRequest<'_>,
    signed_headers: &str,
    secret: &str,
    amz_date: &str,
    region: &str,
    service: &str,
) -> String {
    let date = &amz_date[..8];
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let to_sign = string_to_sign(
        amz_date,
        &scope,
        &canonical_request(request, signed_headers),
    );
    hex::encode(hmac_sha256(
        &signing_key(secret, date, region, service),
        to_sign.as_bytes(),
    ))
}

#[cfg(test)]
#[path = "sigv4_tests.rs"]
mod tests;
