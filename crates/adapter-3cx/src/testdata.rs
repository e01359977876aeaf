//! The real samples in `testdata/samples/3cx/`, for tests, benchmarks and the simulator.
//!
//! Public so that the benchmark, the fuzz seeds and the simulator's tests read the same bytes;
//! not part of the adapter's API.

macro_rules! sample {
    ($name:literal) => {
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/samples/3cx/", $name))
    };
}

/// `callcontrol_participant_v20_ringing_inbound.json`: a V20 participant body (capture).
pub const PARTICIPANT_RINGING: &str = sample!("callcontrol_participant_v20_ringing_inbound.json");
/// `callcontrol_ws_debuglog_qmex.jsonl`: a bridge's log line wrapping a body and a frame's numbers.
pub const WS_DEBUGLOG: &str = sample!("callcontrol_ws_debuglog_qmex.jsonl");
/// `callcontrol_ws_event_envelope_upsert.json`: one WebSocket event frame.
pub const WS_UPSERT: &str = sample!("callcontrol_ws_event_envelope_upsert.json");
/// `callcontrol_ws_request_frame.json`: a client→PBX request frame.
pub const WS_REQUEST: &str = sample!("callcontrol_ws_request_frame.json");
/// `cdr_socket_27fields_dorel14.txt`: one CDR line, 27 legacy fields, default order.
pub const CDR_LINE: &str = sample!("cdr_socket_27fields_dorel14.txt");
/// `cdr_v16_record_converted_to_json.json`: a V16 record re-keyed to JSON by an integrator.
pub const CDR_V16_JSON: &str = sample!("cdr_v16_record_converted_to_json.json");
/// `v16_mgmt_api_activecalls_response.json`: the V16/V18 console's active calls.
pub const V16_ACTIVE_CALLS: &str = sample!("v16_mgmt_api_activecalls_response.json");
/// `competitor_creomate_bundle_webhooks.jsonl`: a competitor's webhook bodies (vendor sample).
pub const CREOMATE_BUNDLE: &str = sample!("competitor_creomate_bundle_webhooks.jsonl");
/// `competitor_creomate_webhook_generator_get.txt`: a competitor's GET query strings.
pub const CREOMATE_GET: &str = sample!("competitor_creomate_webhook_generator_get.txt");
/// `competitor_k2m_webhooks.jsonl`: another competitor's webhook bodies.
pub const K2M: &str = sample!("competitor_k2m_webhooks.jsonl");
