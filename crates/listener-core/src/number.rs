//! Number normalisation: E.164 digits without `+`, as in the seed (`441234567890`).
//!
//! PBXs show numbers the way their users dial them (`01707 123456`, `+44 1707 123456`,
//! `0044…`), the platform shows E.164. Correlation by number and the `from`/`to` of every
//! event need one form, so every number goes through [`NumberPlan::normalise`] once.
//! Extensions and URIs are kept exactly as they are. Parsing uses `phonenumber`, a maintained
//! port of Google's libphonenumber, with the configured default region for national numbers.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use phonenumber::country;

use crate::signal::CallInfo;

/// What the caller-id of a withheld number is normalised to.
pub const WITHHELD: &str = "anonymous";

/// How to read the numbers of one installation.
#[derive(Debug, Clone)]
pub struct NumberPlan {
    region: country::Id,
    /// The region's country calling code (44 for GB).
    region_code: u16,
    max_extension_digits: usize,
}

/// A bad number plan setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumberPlanError {
    /// The region is not an ISO 3166-1 alpha-2 code libphonenumber knows.
    #[error("{0:?} is not a region code (expected an ISO 3166 code such as \"GB\" or \"US\")")]
    UnknownRegion(String),
}

impl NumberPlan {
    /// A plan for national numbers of `region` (`"GB"`), where numbers of at most
    /// `max_extension_digits` digits without a `+` are extensions.
    pub fn new(region: &str, max_extension_digits: usize) -> Result<NumberPlan, NumberPlanError> {
        let region = country::Id::from_str(&region.to_ascii_uppercase())
            .map_err(|_| NumberPlanError::UnknownRegion(region.to_owned()))?;
        let region_code = phonenumber::metadata::DATABASE
            .by_id(region.as_ref())
            .map(|m| m.country_code())
            .ok_or_else(|| NumberPlanError::UnknownRegion(region.as_ref().to_owned()))?;
        Ok(NumberPlan { region, region_code, max_extension_digits })
    }

    /// The region code.
    pub fn region(&self) -> &str {
        self.region.as_ref()
    }

    /// Normalises one number: E.164 digits without `+` where it is a phone number, `anonymous`
    /// when withheld, and the input (trimmed) when it is an extension, a URI or unreadable.
    pub fn normalise(&self, raw: &str) -> String {
        let s = raw.trim();
        if s.is_empty() {
            return String::new();
        }
        let lower = s.to_ascii_lowercase();
        if matches!(lower.as_str(), "anonymous" | "withheld" | "private" | "restricted" | "unavailable")
            || lower.starts_with("anonymous@")
        {
            return WITHHELD.to_owned();
        }
        let bare = lower.strip_prefix("tel:").map(|_| &s[4..]).unwrap_or(s);
        // URIs (`sip:…`, `user@host`) are kept as they are.
        if bare.contains('@') || bare.contains(':') {
            return s.to_owned();
        }
        let plus = bare.starts_with('+');
        if !bare.chars().all(|c| c.is_ascii_digit() || " +-.()/".contains(c)) {
            return s.to_owned();
        }
        let digits: String = bare.chars().filter(char::is_ascii_digit).collect();
        if digits.is_empty() {
            return s.to_owned();
        }
        if !plus && digits.len() <= self.max_extension_digits {
            return digits;
        }
        let parsed = if plus {
            parse_international(&digits)
        } else {
            match phonenumber::parse(Some(self.region), &digits) {
                // Dialled with an international prefix (`00`, `011`): phonenumber 0.3.10 strips
                // the *default* region's national prefix from the foreign number (US "1" eats
                // the "1" of "+44 1707…"), so parse what follows the prefix as "+…" instead.
                Ok(n) if n.code().value() != self.region_code => {
                    let cc = n.code().value().to_string();
                    (1..=4)
                        .filter(|&i| digits.get(i..).is_some_and(|rest| rest.starts_with(&cc)))
                        .find_map(|i| parse_international(&digits[i..]))
                }
                Ok(n) => Some(n),
                Err(_) => None,
            }
        };
        match parsed {
            Some(number) => {
                number.format().mode(phonenumber::Mode::E164).to_string().trim_start_matches('+').to_owned()
            }
            // Not a number libphonenumber can read: keep the digits, the best we have.
            None => digits,
        }
    }

    /// Normalises the numbers of a [`CallInfo`] in place.
    pub fn normalise_call_info(&self, info: &mut CallInfo) {
        for n in [&mut info.external_number, &mut info.dialled_number].into_iter().flatten() {
            *n = self.normalise(n).into();
        }
    }
}

/// A [`NumberPlan`] with a bounded memo of what it normalised. Every signal of a call carries the
/// same numbers, and a libphonenumber parse costs microseconds: the pipeline normalises each
/// distinct number once while it is in use.
#[derive(Debug, Clone)]
pub struct NumberCache {
    plan: NumberPlan,
    /// Raw → normalised, shared: the calls holding a number hold one copy of it.
    memo: HashMap<String, Arc<str>>,
    capacity: usize,
}

impl NumberCache {
    /// A cache of at most `capacity` numbers (emptied when full: numbers of live calls come back
    /// at once, old ones are not worth tracking).
    pub fn new(plan: NumberPlan, capacity: usize) -> NumberCache {
        NumberCache { plan, memo: HashMap::new(), capacity: capacity.max(1) }
    }

    /// [`NumberPlan::normalise`], memoised.
    pub fn normalise(&mut self, raw: &str) -> Arc<str> {
        if let Some(n) = self.memo.get(raw) {
            return n.clone();
        }
        let n: Arc<str> = self.plan.normalise(raw).into();
        if self.memo.len() >= self.capacity {
            self.memo.clear();
        }
        self.memo.insert(raw.to_owned(), n.clone());
        n
    }

    /// [`NumberPlan::normalise_call_info`], memoised.
    pub fn normalise_call_info(&mut self, info: &mut CallInfo) {
        for n in [&mut info.external_number, &mut info.dialled_number].into_iter().flatten() {
            *n = self.normalise(n);
        }
    }
}

/// Parses digits that follow a `+` (no default region involved).
fn parse_international(digits: &str) -> Option<phonenumber::PhoneNumber> {
    phonenumber::parse(None, format!("+{digits}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gb() -> NumberPlan {
        NumberPlan::new("GB", 6).unwrap()
    }

    #[test]
    fn national_and_international_forms_agree() {
        let p = gb();
        for raw in
            ["01707 123456", "+44 1707 123456", "00441707123456", "441707123456", "+441707123456", "(01707) 123-456"]
        {
            assert_eq!(p.normalise(raw), "441707123456", "{raw}");
        }
    }

    #[test]
    fn seed_numbers_are_already_normal() {
        assert_eq!(gb().normalise("441234567890"), "441234567890");
        assert_eq!(gb().normalise("+15551230100"), "15551230100");
    }

    #[test]
    fn other_regions() {
        let us = NumberPlan::new("us", 4).unwrap();
        assert_eq!(us.region(), "US");
        assert_eq!(us.normalise("(212) 555-0100"), "12125550100");
        assert_eq!(us.normalise("011 44 1707 123456"), "441707123456");
        assert_eq!(us.normalise("+44 1707 123456"), "441707123456");
        assert_eq!(us.normalise("1 212 555 0100"), "12125550100");
        let de = NumberPlan::new("DE", 4).unwrap();
        assert_eq!(de.normalise("0049 30 1234567"), "49301234567");
        assert_eq!(de.normalise("030 1234567"), "49301234567");
    }

    #[test]
    fn extensions_and_uris_are_kept() {
        let p = gb();
        assert_eq!(p.normalise("201"), "201");
        assert_eq!(p.normalise(" 4001 "), "4001");
        assert_eq!(p.normalise("user@mydomain.connect.callable.io"), "user@mydomain.connect.callable.io");
        assert_eq!(p.normalise("sip:+15557654321@sip.cpaas.example.net"), "sip:+15557654321@sip.cpaas.example.net");
        assert_eq!(p.normalise("9145661757@172.16.2.10"), "9145661757@172.16.2.10");
        assert_eq!(p.normalise("*17"), "*17");
    }

    #[test]
    fn withheld_numbers() {
        let p = gb();
        for raw in ["anonymous", "Anonymous", "anonymous@anonymous.invalid", "withheld", "Private"] {
            assert_eq!(p.normalise(raw), WITHHELD, "{raw}");
        }
        assert_eq!(p.normalise(""), "");
        assert_eq!(p.normalise("   "), "");
    }

    #[test]
    fn tel_uris_are_numbers() {
        assert_eq!(gb().normalise("tel:+441707123456"), "441707123456");
    }

    #[test]
    fn unparseable_digits_are_kept_as_digits() {
        // Too long for any plan: libphonenumber refuses it, we keep the digits.
        assert_eq!(gb().normalise("123456789012345678901"), "123456789012345678901");
    }

    #[test]
    fn unknown_region_is_an_error() {
        assert_eq!(NumberPlan::new("XX", 4).unwrap_err(), NumberPlanError::UnknownRegion("XX".into()));
    }

    #[test]
    fn the_cache_gives_the_plans_answers_and_stays_bounded() {
        let mut cache = NumberCache::new(gb(), 2);
        for raw in ["01707 123456", "201", "+44 1234 567890", "01707 123456", "anonymous"] {
            assert_eq!(&*cache.normalise(raw), gb().normalise(raw), "{raw}");
            assert!(cache.memo.len() <= 2);
        }
        let mut info = CallInfo { external_number: Some("01707 123456".into()), ..CallInfo::default() };
        cache.normalise_call_info(&mut info);
        assert_eq!(info.external_number.as_deref(), Some("441707123456"));
    }

    #[test]
    fn call_info_in_place() {
        let mut info = CallInfo {
            external_number: Some("01707 123456".into()),
            dialled_number: Some("+44 1234 567890".into()),
            ..CallInfo::default()
        };
        gb().normalise_call_info(&mut info);
        assert_eq!(info.external_number.as_deref(), Some("441707123456"));
        assert_eq!(info.dialled_number.as_deref(), Some("441234567890"));
    }
}
