//! Scripted answers of the platform simulator.
//!
//! A script is a comma-separated list of steps, each `ANSWER[*COUNT][:OPTION]…`:
//!
//! - `ANSWER` is an HTTP status (`200`, `503`, `410`, …) or `drop` (close the connection
//!   without answering);
//! - `*COUNT` repeats the step;
//! - options: `retry-after=SECS` (a `Retry-After` header in seconds), `retry-after-date=SECS`
//!   (the same moment as an HTTP date), `delay-ms=MS` (wait before answering).
//!
//! After the last step the platform answers 200 for ever. `503*3,429:retry-after=1,200`.

use std::collections::VecDeque;
use std::str::FromStr;
use std::time::Duration;

/// How a `Retry-After` header is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfter {
    /// `Retry-After: <seconds>`.
    Seconds(u64),
    /// `Retry-After: <HTTP date>`, this many seconds from when the answer is sent.
    DateIn(u64),
}

/// One answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Answer with this status.
    Status {
        /// The HTTP status.
        code: u16,
        /// A `Retry-After` header.
        retry_after: Option<RetryAfter>,
        /// Wait this long before answering.
        delay: Duration,
    },
    /// Close the connection without answering, after `delay`.
    Drop {
        /// Wait this long first.
        delay: Duration,
    },
}

impl Reply {
    /// `200 OK` at once.
    pub const OK: Reply = Reply::Status { code: 200, retry_after: None, delay: Duration::ZERO };
}

/// A script: the answers to give, in order, then 200 for ever.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Script {
    steps: VecDeque<(Reply, u32)>,
}

impl Script {
    /// The empty script: 200 for ever.
    pub fn always_ok() -> Script {
        Script::default()
    }

    /// The next answer.
    pub fn next_reply(&mut self) -> Reply {
        let Some((reply, count)) = self.steps.front_mut() else { return Reply::OK };
        let reply = reply.clone();
        *count -= 1;
        if *count == 0 {
            self.steps.pop_front();
        }
        reply
    }
}

/// A script that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScriptError {
    /// The answer is neither a status nor `drop`.
    #[error("step {step}: {answer:?} is neither an HTTP status (100-599) nor \"drop\"")]
    BadAnswer {
        /// 1-based step number.
        step: usize,
        /// What was written.
        answer: String,
    },
    /// The repeat count is not a positive integer.
    #[error("step {step}: {count:?} is not a positive repeat count")]
    BadCount {
        /// 1-based step number.
        step: usize,
        /// What was written.
        count: String,
    },
    /// An option is unknown or its value not a number.
    #[error("step {step}: bad option {option:?} (expected retry-after=SECS, retry-after-date=SECS or delay-ms=MS)")]
    BadOption {
        /// 1-based step number.
        step: usize,
        /// What was written.
        option: String,
    },
}

impl FromStr for Script {
    type Err = ScriptError;

    fn from_str(text: &str) -> Result<Script, ScriptError> {
        let mut steps = VecDeque::new();
        for (i, item) in text.split(',').map(str::trim).filter(|s| !s.is_empty()).enumerate() {
            let step = i + 1;
            let mut parts = item.split(':');
            let head = parts.next().unwrap_or_default();
            let (answer, count) = match head.split_once('*') {
                Some((a, c)) => {
                    let n = c.parse::<u32>().ok().filter(|n| *n > 0);
                    (a, n.ok_or_else(|| ScriptError::BadCount { step, count: c.to_owned() })?)
                }
                None => (head, 1),
            };
            let mut retry_after = None;
            let mut delay = Duration::ZERO;
            for option in parts {
                let bad = || ScriptError::BadOption { step, option: option.to_owned() };
                let (key, value) = option.split_once('=').ok_or_else(bad)?;
                let value: u64 = value.parse().map_err(|_| bad())?;
                match key {
                    "retry-after" => retry_after = Some(RetryAfter::Seconds(value)),
                    "retry-after-date" => retry_after = Some(RetryAfter::DateIn(value)),
                    "delay-ms" => delay = Duration::from_millis(value),
                    _ => return Err(bad()),
                }
            }
            let reply = if answer == "drop" {
                Reply::Drop { delay }
            } else {
                let code = answer.parse::<u16>().ok().filter(|c| (100..600).contains(c));
                let code = code.ok_or_else(|| ScriptError::BadAnswer { step, answer: answer.to_owned() })?;
                Reply::Status { code, retry_after, delay }
            };
            steps.push_back((reply, count));
        }
        Ok(Script { steps })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> Reply {
        Reply::Status { code, retry_after: None, delay: Duration::ZERO }
    }

    #[test]
    fn plays_the_steps_then_200_for_ever() {
        let mut script: Script = "503*3, 429:retry-after=1, drop:delay-ms=20, 201".parse().unwrap_or_default();
        let replies: Vec<Reply> = (0..8).map(|_| script.next_reply()).collect();
        assert_eq!(
            replies,
            [
                status(503),
                status(503),
                status(503),
                Reply::Status { code: 429, retry_after: Some(RetryAfter::Seconds(1)), delay: Duration::ZERO },
                Reply::Drop { delay: Duration::from_millis(20) },
                status(201),
                Reply::OK,
                Reply::OK,
            ]
        );
    }

    #[test]
    fn empty_is_always_ok() {
        let mut script: Script = "".parse().unwrap_or_default();
        assert_eq!(script.next_reply(), Reply::OK);
        assert_eq!(script, Script::always_ok());
    }

    #[test]
    fn refusals_name_the_step() {
        assert_eq!("200,abc".parse::<Script>(), Err(ScriptError::BadAnswer { step: 2, answer: "abc".into() }));
        assert_eq!("700".parse::<Script>(), Err(ScriptError::BadAnswer { step: 1, answer: "700".into() }));
        assert_eq!("503*0".parse::<Script>(), Err(ScriptError::BadCount { step: 1, count: "0".into() }));
        assert_eq!("429:retry=1".parse::<Script>(), Err(ScriptError::BadOption { step: 1, option: "retry=1".into() }));
        assert!(matches!("429:retry-after-date=x".parse::<Script>(), Err(ScriptError::BadOption { .. })));
        assert_eq!(
            "429:retry-after-date=5".parse::<Script>().map(|mut s| s.next_reply()),
            Ok(Reply::Status { code: 429, retry_after: Some(RetryAfter::DateIn(5)), delay: Duration::ZERO })
        );
    }
}
