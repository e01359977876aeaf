//! Scripted calls as [`PbxSignal`]s, for driving the pipeline without a PBX protocol.
//!
//! The protocol simulators ([`crate::avaya_r11`]) are what the demo and the end-to-end tests
//! use; these scripts feed the core directly, for pipeline tests and for load generation where
//! the PBX codec is not what is being measured.

use listener_core::{
    CallChange, CallInfo, CallSignal, Direction, DisconnectReason, Extension, Facts, PbxCallId, PbxId, PbxSignal,
    SignalBody, UnixMillis,
};

/// One step of a call: after `after_ms` from the call's start, `extension` (or the call, when
/// `None`) sees `change`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Offset from the start of the call.
    pub after_ms: u64,
    /// The device, or `None` for the call itself.
    pub extension: Option<&'static str>,
    /// What happens.
    pub change: CallChange,
}

/// The kinds of scripted call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// Inbound to a hunt group ringing three phones; one answers, holds, resumes, hangs up.
    HuntGroupAnswered,
    /// Inbound, answered, parked, picked up from the park slot by another phone.
    ParkAndUnpark,
    /// Inbound, answered, transferred to another phone.
    BlindTransfer,
    /// Inbound, rings, the caller gives up.
    CallerAbandoned,
}

impl CallKind {
    /// Every kind, in the order a mix cycles through them.
    pub const ALL: [CallKind; 4] =
        [CallKind::HuntGroupAnswered, CallKind::ParkAndUnpark, CallKind::BlindTransfer, CallKind::CallerAbandoned];

    /// The script.
    pub fn steps(self) -> Vec<Step> {
        use CallChange::*;
        let s = |after_ms, extension, change| Step { after_ms, extension, change };
        match self {
            CallKind::HuntGroupAnswered => vec![
                s(0, None, Queued { queue: Some("Sales".into()) }),
                s(0, Some("201"), Ringing),
                s(0, Some("202"), Ringing),
                s(0, Some("203"), Ringing),
                s(3_000, Some("202"), Connected),
                s(3_000, Some("201"), Disconnected { reason: DisconnectReason::AnsweredElsewhere }),
                s(3_000, Some("203"), Disconnected { reason: DisconnectReason::AnsweredElsewhere }),
                s(9_000, Some("202"), Held),
                s(14_000, Some("202"), Resumed),
                s(30_000, Some("202"), Disconnected { reason: DisconnectReason::Normal }),
                s(30_000, None, Ended),
            ],
            CallKind::ParkAndUnpark => vec![
                s(0, Some("204"), Ringing),
                s(2_000, Some("204"), Connected),
                s(8_000, Some("204"), Parked { slot: Some("1".into()) }),
                s(15_000, Some("205"), Unparked { slot: Some("1".into()) }),
                s(40_000, Some("205"), Disconnected { reason: DisconnectReason::Normal }),
                s(40_000, None, Ended),
            ],
            CallKind::BlindTransfer => vec![
                s(0, Some("206"), Ringing),
                s(1_500, Some("206"), Connected),
                s(6_000, Some("206"), Transferred { to: Some("207".into()) }),
                s(6_000, Some("207"), Ringing),
                s(9_000, Some("207"), Connected),
                s(25_000, None, Ended),
            ],
            CallKind::CallerAbandoned => vec![
                s(0, Some("208"), Ringing),
                s(12_000, Some("208"), Disconnected { reason: DisconnectReason::CallerAbandoned }),
                s(12_000, None, Ended),
            ],
        }
    }
}

/// The signals of one scripted inbound call, with their offsets from `started`.
pub fn call_signals(
    pbx: &PbxId,
    call_id: u64,
    kind: CallKind,
    started: UnixMillis,
    caller: &str,
    did: &str,
) -> Vec<(u64, PbxSignal)> {
    kind.steps()
        .into_iter()
        .map(|step| {
            let signal = PbxSignal {
                pbx: pbx.clone(),
                at: started.plus_ms(step.after_ms),
                source: "scenario",
                facts: Facts::new(),
                body: SignalBody::Call(CallSignal {
                    call: PbxCallId(call_id.to_string()),
                    call_started: started,
                    extension: step.extension.map(|e| Extension(e.to_owned())),
                    change: step.change,
                    info: CallInfo {
                        direction: Direction::Inbound,
                        external_number: Some(caller.to_owned()),
                        dialled_number: Some(did.to_owned()),
                        sip_call_id: None,
                        caller_name: Some("Demo Caller".to_owned()),
                    },
                }),
            };
            (step.after_ms, signal)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_ends_the_call_and_is_in_time_order() {
        for kind in CallKind::ALL {
            let steps = kind.steps();
            assert_eq!(steps.last().map(|s| &s.change), Some(&CallChange::Ended), "{kind:?}");
            assert!(steps.windows(2).all(|w| w[0].after_ms <= w[1].after_ms), "{kind:?}");
        }
        let pbx = PbxId::new("demo", listener_core::PbxType::AvayaR11);
        let signals =
            call_signals(&pbx, 7, CallKind::CallerAbandoned, UnixMillis(1_000), "441707123456", "441234567890");
        assert_eq!(signals.len(), 3);
        assert_eq!(signals[1].1.at, UnixMillis(13_000));
    }
}
