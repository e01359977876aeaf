//! The access token: `POST /connect/token` (OAuth2 client credentials), as a sans-IO state
//! machine.
//!
//! 3CX's sharp edges, and what this machine does about each:
//!
//! - **`expires_in` is minutes up to 20.0.8 and seconds from 20.0.9.** When the token is a JWT
//!   with `iat` and `exp`, its own lifetime (`exp - iat`) is used. Otherwise a value of at most
//!   [`MINUTES_THRESHOLD`] is read as minutes (a token living two minutes or less is
//!   implausible; 20.0.8 sends 60), anything above as seconds. The admin can force either unit
//!   (`expires_in_unit`).
//! - **One valid token per client id.** Minting a token invalidates the previous one for every
//!   consumer of that client id. We refresh at half the lifetime (3CX's own example re-mints
//!   every 30 minutes), and on any 401 (REST or the WebSocket upgrade) of the *current* token;
//!   401s of older tokens are ignored, so a burst of 401s costs one refresh (single flight:
//!   at most one request in flight, see [`TokenManager::poll_fetch`]).
//! - **Another consumer of the same client id** (a second listener, a CRM plug-in) makes
//!   3CX invalidate our token again and again. A 401 on a token that had not expired yet is
//!   counted as an invalidation; [`CONFLICT_THRESHOLD`] of them within [`CONFLICT_WINDOW_MS`]
//!   is a conflict: the machine says so ([`TokenEvent::Conflict`], naming the cause) and waits
//!   with a growing backoff instead of joining a 401 loop that would also kick the other
//!   program out.
//! - **A wrong secret** is a 400/401 from the token endpoint: [`TokenEvent::Rejected`], and the
//!   next attempt only after the configured authentication back-off.
//!
//! Time and randomness are arguments: `handle_*(now, …, unit)`.
//!
//! ```
//! use adapter_3cx::token::{TokenManager, TokenSettings, TokenResponse};
//! use listener_core::{Secret, UnixMillis};
//!
//! let mut tokens = TokenManager::new(TokenSettings::default());
//! assert!(tokens.poll_fetch(UnixMillis(0)), "no token yet: fetch one");
//! assert!(!tokens.poll_fetch(UnixMillis(0)), "single flight");
//! let response = TokenResponse::from_json(br#"{"token_type":"Bearer","expires_in":60,"access_token":"abc"}"#).unwrap();
//! tokens.handle_fetched(UnixMillis(0), Ok(response), 0.5);
//! let token = tokens.current(UnixMillis(1_000)).unwrap();
//! assert_eq!(token.expires, UnixMillis(3_595_000), "60 is read as minutes (20.0.8 and older), less a 5 s margin");
//! assert_eq!(tokens.poll_timeout(), Some(UnixMillis(1_800_000)), "refreshed at half its life");
//! ```

use std::collections::VecDeque;
use std::time::Duration;

use base64::Engine as _;
use listener_core::{Secret, UnixMillis};
use listener_kit::Backoff;
use serde::Deserialize;

use crate::participant::{lenient_int, lenient_string};

/// `expires_in` values up to this are minutes (in `auto` mode).
pub const MINUTES_THRESHOLD: u64 = 120;
/// Invalidations within [`CONFLICT_WINDOW_MS`] that make a conflict.
pub const CONFLICT_THRESHOLD: usize = 3;
/// The window in which invalidations are counted.
pub const CONFLICT_WINDOW_MS: u64 = 10 * 60 * 1000;
/// The lifetime assumed when the response gives none (3CX's example caches tokens 30 min).
pub const DEFAULT_LIFETIME_MS: u64 = 30 * 60 * 1000;
/// Tokens are treated as expired this long before their end (clock skew, request time).
pub const EXPIRY_MARGIN_MS: u64 = 5_000;

/// How to read `expires_in`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExpiresInUnit {
    /// The JWT's own lifetime, else minutes up to [`MINUTES_THRESHOLD`], seconds above.
    #[default]
    Auto,
    /// Seconds (3CX 20.0.9 and later; RFC 6749).
    Seconds,
    /// Minutes (3CX 20.0.8 and earlier).
    Minutes,
}

/// Tuning of the token machine.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenSettings {
    /// How to read `expires_in`.
    pub expires_in_unit: ExpiresInUnit,
    /// The wait after the endpoint refused our credentials.
    pub auth_failure_backoff: Duration,
    /// The first wait after a conflict with another consumer; doubles per repeated conflict.
    pub conflict_backoff: Duration,
    /// The longest wait after a conflict.
    pub conflict_backoff_max: Duration,
    /// Retry schedule after a failed request (network, 5xx).
    pub retry: Backoff,
}

impl Default for TokenSettings {
    fn default() -> TokenSettings {
        TokenSettings {
            expires_in_unit: ExpiresInUnit::Auto,
            auth_failure_backoff: Duration::from_secs(300),
            conflict_backoff: Duration::from_secs(60),
            conflict_backoff_max: Duration::from_secs(3600),
            retry: Backoff::new(Duration::from_secs(1), Duration::from_secs(60)),
        }
    }
}

/// The token endpoint's answer.
#[derive(Clone, Deserialize)]
pub struct TokenResponse {
    /// The bearer token.
    #[serde(deserialize_with = "secret")]
    pub access_token: Secret,
    /// Its lifetime, in minutes or seconds (see the module documentation).
    #[serde(default, deserialize_with = "lenient_u64")]
    pub expires_in: Option<u64>,
    /// `Bearer`.
    #[serde(default, deserialize_with = "lenient_string")]
    pub token_type: Option<String>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("expires_in", &self.expires_in)
            .field("token_type", &self.token_type)
            .finish_non_exhaustive()
    }
}

fn secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
    let s = lenient_string(d)?.filter(|s| !s.is_empty());
    s.map(Secret::new).ok_or_else(|| serde::de::Error::custom("access_token is empty"))
}

fn lenient_u64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(lenient_int(d)?.and_then(|n| u64::try_from(n).ok()))
}

impl TokenResponse {
    /// Reads the endpoint's JSON. The error never contains the token.
    pub fn from_json(body: &[u8]) -> Result<TokenResponse, String> {
        serde_json::from_slice(body).map_err(|e| {
            // serde_json's message may quote input; keep only its category and position.
            format!("not a token response ({:?} error at line {} column {})", e.classify(), e.line(), e.column())
        })
    }
}

/// How the lifetime was worked out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifetimeBasis {
    /// The JWT's `exp - iat`.
    Jwt,
    /// `expires_in` read as seconds.
    Seconds,
    /// `expires_in` read as minutes.
    Minutes,
    /// No usable lifetime: [`DEFAULT_LIFETIME_MS`].
    Default,
}

impl LifetimeBasis {
    /// For logs.
    pub fn as_str(self) -> &'static str {
        match self {
            LifetimeBasis::Jwt => "jwt",
            LifetimeBasis::Seconds => "seconds",
            LifetimeBasis::Minutes => "minutes",
            LifetimeBasis::Default => "default",
        }
    }
}

/// The lifetime of a token in ms, and how it was found.
pub fn lifetime_ms(response: &TokenResponse, unit: ExpiresInUnit) -> (u64, LifetimeBasis) {
    let expires_in = response.expires_in.filter(|n| *n > 0);
    match (unit, expires_in) {
        (ExpiresInUnit::Seconds, Some(n)) => (n.saturating_mul(1000), LifetimeBasis::Seconds),
        (ExpiresInUnit::Minutes, Some(n)) => (n.saturating_mul(60_000), LifetimeBasis::Minutes),
        (ExpiresInUnit::Auto, _) => {
            if let Some(secs) = jwt_lifetime_secs(response.access_token.expose()) {
                return (secs * 1000, LifetimeBasis::Jwt);
            }
            match expires_in {
                Some(n) if n <= MINUTES_THRESHOLD => (n * 60_000, LifetimeBasis::Minutes),
                Some(n) => (n.saturating_mul(1000), LifetimeBasis::Seconds),
                None => (DEFAULT_LIFETIME_MS, LifetimeBasis::Default),
            }
        }
        (_, None) => (DEFAULT_LIFETIME_MS, LifetimeBasis::Default),
    }
}

/// `exp - iat` of a JWT, when the token is one and the claims are plausible (1 s to 7 days).
pub fn jwt_lifetime_secs(token: &str) -> Option<u64> {
    #[derive(Deserialize)]
    struct Claims {
        #[serde(default, deserialize_with = "lenient_int")]
        exp: Option<i64>,
        #[serde(default, deserialize_with = "lenient_int")]
        iat: Option<i64>,
        #[serde(default, deserialize_with = "lenient_int")]
        nbf: Option<i64>,
    }
    let mut parts = token.split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || payload.len() > 8192 {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: Claims = serde_json::from_slice(&bytes).ok()?;
    let issued = claims.iat.or(claims.nbf)?;
    let life = claims.exp?.checked_sub(issued)?;
    (1..=7 * 86_400).contains(&life).then_some(life as u64)
}

/// A token we hold.
#[derive(Debug, Clone)]
pub struct Token {
    /// The bearer token.
    pub secret: Secret,
    /// Counts the tokens minted by this machine; a 401 names the generation it used.
    pub generation: u64,
    /// When we received it.
    pub obtained: UnixMillis,
    /// When it expires (by its lifetime, less [`EXPIRY_MARGIN_MS`]).
    pub expires: UnixMillis,
    /// When to mint the next one.
    pub refresh_at: UnixMillis,
}

/// Why a token request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// The endpoint refused the client id or secret (400 `invalid_client`, 401).
    Rejected(String),
    /// Anything else (network, timeout, 5xx, an unreadable answer): retry with backoff.
    Failed(String),
}

/// What the machine wants its driver to know (and log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenEvent {
    /// A new token.
    Obtained {
        /// Its generation.
        generation: u64,
        /// Its lifetime.
        lifetime_ms: u64,
        /// How the lifetime was worked out.
        basis: LifetimeBasis,
        /// `expires_in` as sent.
        expires_in: Option<u64>,
    },
    /// The token endpoint refused our credentials; next attempt at `retry_at`.
    Rejected {
        /// What the endpoint said (never the secret).
        reason: String,
        /// The next attempt.
        retry_at: UnixMillis,
    },
    /// A request failed; next attempt at `retry_at`.
    Failed {
        /// Why.
        reason: String,
        /// The next attempt.
        retry_at: UnixMillis,
    },
    /// A token that had not expired was refused (3CX invalidated it).
    Invalidated {
        /// Its generation.
        generation: u64,
        /// Invalidations within the window, this one included.
        recent: usize,
    },
    /// Tokens keep being invalidated: another program uses the same client id.
    Conflict {
        /// Invalidations within the window.
        recent: usize,
        /// The next attempt.
        retry_at: UnixMillis,
    },
}

/// Why the machine waits before its next request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockCause {
    /// The endpoint refused the client id or secret (what it said).
    Rejected(String),
    /// Another program uses the same client id.
    Conflict,
    /// Requests failed (the last reason).
    Failed(String),
}

/// The token state machine. See the module documentation.
#[derive(Debug)]
pub struct TokenManager {
    cause: Option<BlockCause>,
    settings: TokenSettings,
    token: Option<Token>,
    /// The current token was refused: do not hand it out.
    refused: bool,
    in_flight: bool,
    /// No request before this (backoff after a failure, a rejection or a conflict).
    not_before: Option<UnixMillis>,
    generation: u64,
    retry: Backoff,
    invalidations: VecDeque<UnixMillis>,
    conflicts: u32,
    events: VecDeque<TokenEvent>,
}

impl TokenManager {
    /// A machine without a token.
    pub fn new(settings: TokenSettings) -> TokenManager {
        TokenManager {
            cause: None,
            settings,
            token: None,
            refused: false,
            in_flight: false,
            not_before: None,
            generation: 0,
            retry: settings.retry,
            invalidations: VecDeque::new(),
            conflicts: 0,
            events: VecDeque::new(),
        }
    }

    /// A token valid at `now`, if we hold one.
    pub fn current(&self, now: UnixMillis) -> Option<&Token> {
        self.token.as_ref().filter(|t| !self.refused && now < t.expires)
    }

    /// Whether the driver should request a token now. Returns `true` at most once until
    /// [`TokenManager::handle_fetched`] (single flight).
    pub fn poll_fetch(&mut self, now: UnixMillis) -> bool {
        if self.in_flight || self.not_before.is_some_and(|t| now < t) {
            return false;
        }
        let due = match &self.token {
            None => true,
            Some(t) => self.refused || now >= t.refresh_at,
        };
        if due {
            self.in_flight = true;
        }
        due
    }

    /// A request is in flight.
    pub fn fetching(&self) -> bool {
        self.in_flight
    }

    /// When [`TokenManager::poll_fetch`] may next say yes (`None` while a request is in flight).
    pub fn poll_timeout(&self) -> Option<UnixMillis> {
        if self.in_flight {
            return None;
        }
        let due = match &self.token {
            Some(t) if !self.refused => t.refresh_at,
            _ => UnixMillis(0),
        };
        Some(self.not_before.map_or(due, |nb| nb.max(due)))
    }

    /// When the machine waits after a failure, rejection or conflict: until when.
    pub fn blocked_until(&self, now: UnixMillis) -> Option<UnixMillis> {
        self.not_before.filter(|t| now < *t)
    }

    /// Why the machine waits (while [`TokenManager::blocked_until`] says it does).
    pub fn blocked_cause(&self, now: UnixMillis) -> Option<&BlockCause> {
        self.blocked_until(now).and(self.cause.as_ref())
    }

    /// The answer to the request [`TokenManager::poll_fetch`] asked for. `unit` in `[0, 1)`
    /// jitters the retry delays.
    pub fn handle_fetched(&mut self, now: UnixMillis, result: Result<TokenResponse, FetchError>, unit: f64) {
        self.in_flight = false;
        match result {
            Ok(response) => {
                let (lifetime, basis) = lifetime_ms(&response, self.settings.expires_in_unit);
                self.generation += 1;
                let expires = now.plus_ms(lifetime.saturating_sub(EXPIRY_MARGIN_MS).max(1_000));
                let refresh_at = now.plus_ms((lifetime / 2).max(1_000));
                self.token = Some(Token {
                    secret: response.access_token,
                    generation: self.generation,
                    obtained: now,
                    expires,
                    refresh_at,
                });
                self.refused = false;
                self.not_before = None;
                self.cause = None;
                self.retry.reset();
                self.events.push_back(TokenEvent::Obtained {
                    generation: self.generation,
                    lifetime_ms: lifetime,
                    basis,
                    expires_in: response.expires_in,
                });
            }
            Err(FetchError::Rejected(reason)) => {
                let wait = self.retry.after_auth_failure(self.settings.auth_failure_backoff, unit);
                let retry_at = now.plus_ms(wait.as_millis() as u64);
                self.not_before = Some(retry_at);
                self.refused = true;
                self.cause = Some(BlockCause::Rejected(reason.clone()));
                self.events.push_back(TokenEvent::Rejected { reason, retry_at });
            }
            Err(FetchError::Failed(reason)) => {
                let wait = self.retry.next_delay(unit);
                let retry_at = now.plus_ms(wait.as_millis() as u64);
                self.not_before = Some(retry_at);
                self.cause = Some(BlockCause::Failed(reason.clone()));
                self.events.push_back(TokenEvent::Failed { reason, retry_at });
            }
        }
    }

    /// The PBX answered 401 to a request made with token `generation` (REST or the WebSocket
    /// upgrade).
    pub fn handle_unauthorized(&mut self, now: UnixMillis, generation: u64, unit: f64) {
        let Some(token) = &self.token else { return };
        if generation != token.generation || self.refused {
            // An older token, or this one was already dealt with: the refresh is under way.
            return;
        }
        self.refused = true;
        if now >= token.expires {
            // It simply expired (a clock jump, a long suspend): fetch a new one.
            return;
        }
        while self.invalidations.front().is_some_and(|t| now.since(*t) > CONFLICT_WINDOW_MS) {
            self.invalidations.pop_front();
        }
        self.invalidations.push_back(now);
        let recent = self.invalidations.len();
        self.events.push_back(TokenEvent::Invalidated { generation, recent });
        if recent >= CONFLICT_THRESHOLD {
            self.conflicts = self.conflicts.saturating_add(1);
            let doublings = (self.conflicts - 1).min(16);
            let base =
                self.settings.conflict_backoff.saturating_mul(1 << doublings).min(self.settings.conflict_backoff_max);
            let wait = base.mul_f64(1.0 + 0.25 * unit.clamp(0.0, 1.0));
            let retry_at = now.plus_ms(wait.as_millis() as u64);
            self.not_before = Some(retry_at);
            self.cause = Some(BlockCause::Conflict);
            self.invalidations.clear();
            self.events.push_back(TokenEvent::Conflict { recent, retry_at });
        }
    }

    /// The current token served a whole session without being invalidated: forget past
    /// conflicts (the other program is gone).
    pub fn handle_healthy(&mut self) {
        self.conflicts = 0;
    }

    /// The next event for the driver's log.
    pub fn poll_event(&mut self) -> Option<TokenEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests unwrap what they built themselves.
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn response(expires_in: Option<u64>, token: &str) -> TokenResponse {
        TokenResponse { access_token: Secret::new(token), expires_in, token_type: Some("Bearer".into()) }
    }

    fn jwt(iat: i64, exp: i64) -> String {
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", enc(r#"{"alg":"RS256"}"#), enc(&format!(r#"{{"iat":{iat},"exp":{exp},"sub":"x"}}"#)))
    }

    fn events(m: &mut TokenManager) -> Vec<TokenEvent> {
        std::iter::from_fn(|| m.poll_event()).collect()
    }

    #[test]
    fn minutes_or_seconds() {
        let auto = ExpiresInUnit::Auto;
        assert_eq!(lifetime_ms(&response(Some(60), "t"), auto), (3_600_000, LifetimeBasis::Minutes));
        assert_eq!(lifetime_ms(&response(Some(120), "t"), auto), (7_200_000, LifetimeBasis::Minutes));
        assert_eq!(lifetime_ms(&response(Some(3600), "t"), auto), (3_600_000, LifetimeBasis::Seconds));
        assert_eq!(lifetime_ms(&response(Some(121), "t"), auto), (121_000, LifetimeBasis::Seconds));
        assert_eq!(lifetime_ms(&response(None, "t"), auto), (DEFAULT_LIFETIME_MS, LifetimeBasis::Default));
        assert_eq!(lifetime_ms(&response(Some(0), "t"), auto), (DEFAULT_LIFETIME_MS, LifetimeBasis::Default));
        assert_eq!(lifetime_ms(&response(Some(60), "t"), ExpiresInUnit::Seconds), (60_000, LifetimeBasis::Seconds));
        assert_eq!(lifetime_ms(&response(Some(3600), "t"), ExpiresInUnit::Minutes).1, LifetimeBasis::Minutes);
        // A JWT's own claims win over an ambiguous expires_in.
        assert_eq!(lifetime_ms(&response(Some(60), &jwt(1_000, 4_600)), auto), (3_600_000, LifetimeBasis::Jwt));
        assert_eq!(jwt_lifetime_secs(&jwt(10, 5)), None, "exp before iat");
        assert_eq!(jwt_lifetime_secs("a.b"), None);
        assert_eq!(jwt_lifetime_secs("a.!!!.c"), None);
    }

    #[test]
    fn token_responses_read_leniently_and_never_print_the_token() {
        let r = TokenResponse::from_json(
            br#"{"token_type":"Bearer","expires_in":"3600","access_token":"s3cr3t","refresh_token":null}"#,
        )
        .unwrap();
        assert_eq!(r.expires_in, Some(3600));
        assert!(!format!("{r:?}").contains("s3cr3t"));
        let e = TokenResponse::from_json(br#"{"access_token":"","expires_in":1}"#).unwrap_err();
        assert!(!e.contains("s3cr3t"));
        let e = TokenResponse::from_json(br#"{"access_token": 5, "x": "s3cr3t-in-body"#).unwrap_err();
        assert!(!e.contains("s3cr3t"), "{e}");
    }

    #[test]
    fn refresh_at_half_life_single_flight() {
        let mut m = TokenManager::new(TokenSettings::default());
        assert_eq!(m.poll_timeout(), Some(UnixMillis(0)));
        assert!(m.poll_fetch(UnixMillis(0)));
        assert!(!m.poll_fetch(UnixMillis(0)));
        assert_eq!(m.poll_timeout(), None, "in flight");
        m.handle_fetched(UnixMillis(10), Ok(response(Some(3600), "a")), 0.0);
        let t = m.current(UnixMillis(10)).unwrap();
        assert_eq!((t.generation, t.refresh_at, t.expires), (1, UnixMillis(1_800_010), UnixMillis(3_595_010)));
        assert!(!m.poll_fetch(UnixMillis(1_800_009)));
        assert!(m.poll_fetch(UnixMillis(1_800_010)));
        // While the refresh is in flight the old token is still served.
        assert_eq!(m.current(UnixMillis(1_800_011)).unwrap().generation, 1);
        m.handle_fetched(UnixMillis(1_800_020), Ok(response(Some(3600), "b")), 0.0);
        assert_eq!(m.current(UnixMillis(1_800_020)).unwrap().generation, 2);
        assert!(matches!(
            events(&mut m)[..],
            [TokenEvent::Obtained { generation: 1, .. }, TokenEvent::Obtained { generation: 2, .. }]
        ));
    }

    #[test]
    fn a_401_of_the_current_token_refreshes_once_older_ones_are_ignored() {
        let mut m = TokenManager::new(TokenSettings::default());
        assert!(m.poll_fetch(UnixMillis(0)));
        m.handle_fetched(UnixMillis(0), Ok(response(Some(3600), "a")), 0.0);
        events(&mut m);
        m.handle_unauthorized(UnixMillis(1_000), 1, 0.0);
        m.handle_unauthorized(UnixMillis(1_001), 1, 0.0);
        assert!(m.current(UnixMillis(1_001)).is_none(), "a refused token is not handed out");
        assert!(m.poll_fetch(UnixMillis(1_002)));
        m.handle_fetched(UnixMillis(1_100), Ok(response(Some(3600), "b")), 0.0);
        m.handle_unauthorized(UnixMillis(1_200), 1, 0.0);
        assert_eq!(m.current(UnixMillis(1_200)).unwrap().generation, 2, "a late 401 of token 1 changes nothing");
        let ev = events(&mut m);
        assert_eq!(ev[0], TokenEvent::Invalidated { generation: 1, recent: 1 });
        assert_eq!(ev.len(), 2);
    }

    #[test]
    fn an_expired_token_is_no_invalidation() {
        let mut m = TokenManager::new(TokenSettings::default());
        assert!(m.poll_fetch(UnixMillis(0)));
        m.handle_fetched(UnixMillis(0), Ok(response(Some(3600), "a")), 0.0);
        events(&mut m);
        m.handle_unauthorized(UnixMillis(3_600_000), 1, 0.0);
        assert!(events(&mut m).is_empty());
        assert!(m.poll_fetch(UnixMillis(3_600_000)));
    }

    #[test]
    fn another_consumer_is_a_conflict_with_growing_backoff_not_a_401_loop() {
        let settings = TokenSettings { conflict_backoff: Duration::from_secs(60), ..TokenSettings::default() };
        let mut m = TokenManager::new(settings);
        let mut now = UnixMillis(0);
        let mut conflicts = Vec::new();
        let mut fetches = 0;
        // The other program mints a token every second: each of ours dies at once.
        for _ in 0..200 {
            if m.poll_fetch(now) {
                fetches += 1;
                m.handle_fetched(now, Ok(response(Some(3600), "t")), 0.0);
            }
            if let Some(t) = m.current(now) {
                let g = t.generation;
                m.handle_unauthorized(now.plus_ms(500), g, 0.0);
            }
            for e in events(&mut m) {
                if let TokenEvent::Conflict { retry_at, .. } = e {
                    conflicts.push(retry_at.since(now.plus_ms(500)));
                }
            }
            now = now.plus_ms(1_000);
        }
        assert_eq!(conflicts[..3], [60_000, 120_000, 240_000], "the wait doubles");
        assert!(m.blocked_cause(now).is_none_or(|c| *c == BlockCause::Conflict));
        assert!(fetches <= 12, "{fetches} token requests in 200 s: no loop");
        m.handle_healthy();
    }

    #[test]
    fn wrong_secret_waits_the_auth_backoff_and_failures_back_off() {
        let mut m = TokenManager::new(TokenSettings::default());
        assert!(m.poll_fetch(UnixMillis(0)));
        m.handle_fetched(UnixMillis(0), Err(FetchError::Rejected("invalid_client".into())), 0.0);
        assert_eq!(m.blocked_until(UnixMillis(0)), Some(UnixMillis(300_000)));
        assert_eq!(m.blocked_cause(UnixMillis(0)), Some(&BlockCause::Rejected("invalid_client".into())));
        assert!(!m.poll_fetch(UnixMillis(299_999)));
        assert!(m.poll_fetch(UnixMillis(300_000)));
        m.handle_fetched(UnixMillis(300_000), Err(FetchError::Failed("connection refused".into())), 0.999);
        assert_eq!(m.poll_timeout(), Some(UnixMillis(300_000 + 1_998)), "second failure: up to 2 s");
        let ev = events(&mut m);
        assert!(matches!(&ev[0], TokenEvent::Rejected { reason, .. } if reason == "invalid_client"));
        assert!(matches!(&ev[1], TokenEvent::Failed { .. }));
    }

    proptest! {
        /// Whatever happens, at most one request is in flight, and a served token is never
        /// one that was refused or has expired.
        #[test]
        fn invariants(ops in proptest::collection::vec((0u8..5, 0u64..5_000_000, any::<f64>()), 0..60)) {
            let mut m = TokenManager::new(TokenSettings::default());
            let mut now = UnixMillis(0);
            let mut outstanding = false;
            for (op, dt, unit) in ops {
                now = now.plus_ms(dt % 100_000);
                match op {
                    0 => {
                        let f = m.poll_fetch(now);
                        prop_assert!(!(f && outstanding), "two requests in flight");
                        outstanding |= f;
                    }
                    1 if outstanding => {
                        outstanding = false;
                        m.handle_fetched(now, Ok(response(Some(dt % 7_200), "t")), unit);
                    }
                    2 if outstanding => {
                        outstanding = false;
                        m.handle_fetched(now, Err(FetchError::Failed("x".into())), unit);
                    }
                    3 => {
                        let g = m.current(now).map_or(0, |t| t.generation);
                        m.handle_unauthorized(now, g, unit);
                        prop_assert!(m.current(now).is_none() || m.current(now).unwrap().generation != g);
                    }
                    _ => {}
                }
                if let Some(t) = m.current(now) {
                    prop_assert!(now < t.expires);
                }
                while m.poll_event().is_some() {}
            }
        }
    }
}
