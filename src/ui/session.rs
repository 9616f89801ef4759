//! Admin sessions for the UI's pages.
//!
//! Logging in means presenting the admin token (the one `/api/v1` takes as a bearer token)
//! in the login form. A correct token opens a session: a random 256-bit ID that travels in a
//! cookie (`HttpOnly`, `SameSite=Strict`, `Secure` over TLS), and a CSRF token of its own that
//! every form of the admin pages carries back (a hidden field, or the `X-CSRF-Token` header
//! for script requests). Sessions live in memory: they end at logout, when their lifetime
//! (`api.uiSessionMinutes`) is over, and when the service restarts.
//!
//! Login attempts are rate-limited per client address (IPv6: per /64), so the token cannot be guessed at the
//! speed of the network; the token is compared in constant time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::ratelimit::RateLimiter;

/// Most sessions kept at once; past it the one closest to expiry is dropped.
pub const MAX_SESSIONS: usize = 1024;

/// Login attempts a client may make at once, and how fast its budget refills (one per 6 s).
const LOGIN_BURST: u32 = 10;
const LOGIN_PER_SECOND: f64 = 1.0 / 6.0;

/// An open session, as a page sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The cookie's value.
    pub id: String,
    /// The token every state-changing request of this session must carry.
    pub csrf: String,
    /// How long until it expires.
    pub expires_in: Duration,
}

impl Session {
    /// Whether `presented` is this session's CSRF token (constant time).
    pub fn csrf_matches(&self, presented: &str) -> bool {
        constant_time_eq(presented.as_bytes(), self.csrf.as_bytes())
    }
}

/// Why a login was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// The token is not the admin token.
    #[error("that is not the admin token")]
    WrongToken,
    /// Too many attempts from this client lately.
    #[error("too many login attempts from this address; wait a minute and try again")]
    TooManyAttempts,
}

struct Entry {
    csrf: String,
    expires: Instant,
}

/// The open sessions.
pub struct Sessions {
    token: Arc<str>,
    lifetime: Duration,
    open: Mutex<HashMap<String, Entry>>,
    attempts: RateLimiter<IpAddr>,
}

impl Sessions {
    /// Sessions opened with `token` that last `lifetime`.
    pub fn new(token: Arc<str>, lifetime: Duration) -> Sessions {
        Sessions {
            token,
            lifetime,
            open: Mutex::new(HashMap::new()),
            attempts: RateLimiter::new(LOGIN_BURST, LOGIN_PER_SECOND),
        }
    }

    /// How long a new session lasts.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// Opens a session for `client` when `presented` is the admin token.
    pub fn login(
        &self,
        presented: &str,
        client: IpAddr,
        now: Instant,
    ) -> Result<Session, LoginError> {
        if !self.attempts.allow(attempt_key(client), now) {
            return Err(LoginError::TooManyAttempts);
        }
        if self.token.is_empty()
            || !constant_time_eq(presented.trim().as_bytes(), self.token.as_bytes())
        {
            return Err(LoginError::WrongToken);
        }
        let id = random_token();
        let csrf = random_token();
        let expires = now + self.lifetime;
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|_, e| e.expires > now);
        if open.len() >= MAX_SESSIONS
            && let Some(oldest) = open
                .iter()
                .min_by_key(|(_, e)| e.expires)
                .map(|(k, _)| k.clone())
        {
            open.remove(&oldest);
        }
        open.insert(
            id.clone(),
            Entry {
                csrf: csrf.clone(),
                expires,
            },
        );
        Ok(Session {
            id,
            csrf,
            expires_in: self.lifetime,
        })
    }

    /// The session whose cookie value is `id`, unless it expired or was logged out.
    pub fn get(&self, id: &str, now: Instant) -> Option<Session> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let entry = open.get(id)?;
        if entry.expires <= now {
            open.remove(id);
            return None;
        }
        Some(Session {
            id: id.to_string(),
            csrf: entry.csrf.clone(),
            expires_in: entry.expires - now,
        })
    }

    /// Ends the session `id` (nothing happens for an unknown one).
    pub fn logout(&self, id: &str) {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

/// Whose budget a login attempt from `client` spends: its IPv4 address, or its IPv6 /64 — a
/// host on a LAN may use any address of its /64 (privacy addresses, or by hand), so keying
/// by the full address would give it 2^64 budgets (and let it fill the limiter's table,
/// which then refuses every new client, the admin too).
fn attempt_key(client: IpAddr) -> IpAddr {
    match client.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(
            u128::from(v6) & !u128::from(u64::MAX),
        )),
        v4 => v4,
    }
}

/// 256 random bits, hex.
pub fn random_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// Whether `a` and `b` are equal, in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions() -> Sessions {
        Sessions::new("secret-token".into(), Duration::from_secs(60))
    }

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));

    #[test]
    fn the_token_opens_a_session_that_expires_and_logs_out() {
        let s = sessions();
        let now = Instant::now();
        assert_eq!(s.login("wrong", CLIENT, now), Err(LoginError::WrongToken));
        assert_eq!(s.login("", CLIENT, now), Err(LoginError::WrongToken));
        let session = s.login("secret-token", CLIENT, now).unwrap();
        assert_eq!(session.id.len(), 64);
        assert_ne!(session.id, session.csrf);
        assert!(session.csrf_matches(&session.csrf));
        assert!(!session.csrf_matches(""));
        let seen = s.get(&session.id, now + Duration::from_secs(59)).unwrap();
        assert_eq!(seen.csrf, session.csrf);
        assert_eq!(seen.expires_in, Duration::from_secs(1));
        assert!(s.get(&session.id, now + Duration::from_secs(60)).is_none());
        let second = s.login("secret-token", CLIENT, now).unwrap();
        s.logout(&second.id);
        assert!(s.get(&second.id, now).is_none());
        assert!(s.get("not-a-session", now).is_none());
    }

    #[test]
    fn guessing_is_rate_limited_per_client() {
        let s = sessions();
        let now = Instant::now();
        for _ in 0..LOGIN_BURST {
            assert_eq!(s.login("guess", CLIENT, now), Err(LoginError::WrongToken));
        }
        assert_eq!(
            s.login("secret-token", CLIENT, now),
            Err(LoginError::TooManyAttempts)
        );
        // Addresses of one IPv6 /64 (what one host on a LAN can use at will) share a budget.
        let v6 =
            |last: u16| IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, last));
        for i in 0..LOGIN_BURST as u16 {
            assert_eq!(s.login("guess", v6(i), now), Err(LoginError::WrongToken));
        }
        assert_eq!(
            s.login("secret-token", v6(0xffff), now),
            Err(LoginError::TooManyAttempts)
        );
        let other_net = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 2, 0, 0, 0, 1));
        assert!(s.login("secret-token", other_net, now).is_ok());
        let other = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 8));
        assert!(s.login("secret-token", other, now).is_ok());
        assert!(
            s.login("secret-token", CLIENT, now + Duration::from_secs(7))
                .is_ok()
        );
    }

    #[test]
    fn sessions_are_bounded() {
        let s = sessions();
        let now = Instant::now();
        let first = s.login("secret-token", CLIENT, now).unwrap();
        for i in 0..MAX_SESSIONS {
            let client = IpAddr::V6(std::net::Ipv6Addr::from((i as u128 + 1) << 64));
            s.login(
                "secret-token",
                client,
                now + Duration::from_millis(i as u64 + 1),
            )
            .unwrap();
        }
        assert!(s.get(&first.id, now).is_none());
        assert_eq!(s.open.lock().unwrap().len(), MAX_SESSIONS);
    }
}
