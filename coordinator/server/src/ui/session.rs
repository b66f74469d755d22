//! The dashboard's session: the token asked for once, kept as an HttpOnly, SameSite=Strict
//! cookie, and the CSRF token that every state-changing request made with that cookie must
//! carry in a header.
//!
//! Nothing is stored on the server. The cookie is `v1.<expiry>.<nonce>.<mac>`, where the MAC is
//! an HMAC-SHA256 under a key derived from `SWARM_API_TOKEN` (so a cookie proves that its
//! holder knew the token, sessions survive a restart, and changing the token ends them all),
//! and the CSRF token is an HMAC of the cookie under the same key: a page gets it in a
//! `<meta>` element, a script on another site can read neither. The token itself never
//! leaves the login form: it is not in the cookie, a URL or the browser's storage.
//!
//! The cookie is `Secure` (sent over HTTPS only) when `ApiConfig::secure_cookies` is set, and
//! also when the login request came through a proxy that says `X-Forwarded-Proto: https`:
//! the header can only make the cookie stricter, so trusting it risks nothing.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{KeyInit, Mac};
use subtle::ConstantTimeEq;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The cookie's name.
pub(crate) const COOKIE: &str = "swarm_session";

/// The header that carries the CSRF token.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";

/// How long a session lasts.
pub(crate) const LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);

/// Signs and checks sessions for one token.
#[derive(Clone)]
pub(crate) struct Sessions {
    key: [u8; 32],
}

/// A valid session, as the auth middleware hands it to the pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Session {
    /// The CSRF token of this session.
    pub(crate) csrf: String,
}

impl Sessions {
    /// Sessions for `token`.
    pub(crate) fn new(token: &str) -> Self {
        let mut mac = mac(token.as_bytes());
        mac.update(b"swarm dashboard session key v1");
        Self {
            key: mac.finalize().into_bytes().into(),
        }
    }

    /// A new session cookie's value, valid for [`LIFETIME`] from `now`.
    pub(crate) fn issue(&self, now: SystemTime) -> String {
        let expires = seconds(now).saturating_add(LIFETIME.as_secs());
        let nonce = format!("{:016x}", fastrand::u64(..));
        let body = format!("v1.{expires}.{nonce}");
        let signature = hex::encode(self.sign(b"session", body.as_bytes()));
        format!("{body}.{signature}")
    }

    /// The session of a cookie value, if it is genuine and has not expired.
    pub(crate) fn check(&self, value: &str, now: SystemTime) -> Option<Session> {
        let (body, signature) = value.rsplit_once('.')?;
        let signature = hex::decode(signature).ok()?;
        let expected = self.sign(b"session", body.as_bytes());
        if !bool::from(expected.as_slice().ct_eq(&signature)) {
            return None;
        }
        let mut parts = body.split('.');
        let (Some("v1"), Some(expires), Some(_nonce), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let expires: u64 = expires.parse().ok()?;
        if expires <= seconds(now) {
            return None;
        }
        Some(Session {
            csrf: hex::encode(&self.sign(b"csrf", value.as_bytes())[..16]),
        })
    }

    fn sign(&self, purpose: &[u8], data: &[u8]) -> [u8; 32] {
        let mut mac = mac(&self.key);
        mac.update(purpose);
        mac.update(b"\0");
        mac.update(data);
        mac.finalize().into_bytes().into()
    }
}

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length; `new_from_slice` only fails for fixed-size MACs.
    match <HmacSha256 as KeyInit>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    }
}

fn seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The value of the session cookie in a `Cookie` header, if any.
pub(crate) fn cookie_value(header: &str) -> Option<&str> {
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// The `Set-Cookie` value that starts a session; a `secure` cookie is sent by the browser
/// over HTTPS only.
pub(crate) fn set_cookie(value: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={value}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{}",
        LIFETIME.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that ends a session (`secure` as the cookie it replaces).
pub(crate) fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_valid_until_it_expires_and_only_under_its_token() {
        let sessions = Sessions::new("s3cret");
        let now = SystemTime::now();
        let cookie = sessions.issue(now);
        let session = sessions.check(&cookie, now).unwrap();
        assert_eq!(session.csrf.len(), 32);
        // The same cookie always has the same CSRF token; another session another.
        assert_eq!(sessions.check(&cookie, now).unwrap(), session);
        assert_ne!(sessions.check(&sessions.issue(now), now).unwrap(), session);
        assert!(sessions.check(&cookie, now + LIFETIME).is_none());
        assert!(Sessions::new("other").check(&cookie, now).is_none());
        assert!(!cookie.contains("s3cret"));
    }

    #[test]
    fn a_tampered_cookie_is_refused() {
        let sessions = Sessions::new("s3cret");
        let now = SystemTime::now();
        let cookie = sessions.issue(now);
        let (body, signature) = cookie.rsplit_once('.').unwrap();
        let later = body.replacen("v1.", "v1.9", 1);
        for forged in [
            format!("{later}.{signature}"),
            format!("{body}.00"),
            body.to_owned(),
            String::new(),
            "v1.1.2.3.4".to_owned(),
        ] {
            assert!(sessions.check(&forged, now).is_none(), "{forged}");
        }
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        assert_eq!(cookie_value("a=1; swarm_session=xyz; b=2"), Some("xyz"));
        assert_eq!(cookie_value("swarm_session_x=1"), None);
        assert!(set_cookie("v", false).ends_with("HttpOnly; SameSite=Strict"));
        assert!(set_cookie("v", true).ends_with("HttpOnly; SameSite=Strict; Secure"));
        assert!(clear_cookie(true).ends_with("; Secure"));
        assert!(!clear_cookie(false).contains("Secure"));
    }
}
