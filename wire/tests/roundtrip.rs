//! Properties of the binary protocol's codec (proptest): every request and reply frame,
//! with any field values the types allow, decodes to what was encoded, through the same
//! `check` + `decode` path a server and a client use; a decision encoded from a borrowed
//! view decodes to the owned decision it describes; a frame cut anywhere is incomplete,
//! never an error or a different frame.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;
use wire::message::{Decision, DecisionView, ErrorReply, Eval, EvalJson, Hello, HelloOk, Invalidate, Reason, Server, Tool};
use wire::{Check, DEFAULT_MAX_PAYLOAD, HEADER_LEN, Reply, Request, check, decode_reply, decode_request, encode_reply, encode_request};

fn text() -> impl Strategy<Value = String> {
    ".{0,24}"
}

fn texts() -> impl Strategy<Value = Vec<String>> {
    vec(text(), 0..5)
}

fn tool() -> impl Strategy<Value = Tool> {
    (text(), of(text()), of(text()), texts(), texts()).prop_map(|(name, sensitivity_level, owner, managers, teams)| Tool { name, sensitivity_level, owner, managers, teams })
}

fn server() -> impl Strategy<Value = Server> {
    (text(), of(text()), of(text()), texts(), of(text())).prop_map(|(id, name, owner_id, teams, managed_by_team)| Server { id, name, owner_id, teams, managed_by_team })
}

fn eval() -> impl Strategy<Value = Eval> {
    let who = (text(), texts(), texts(), texts(), texts(), of(any::<bool>()), of(any::<i64>()), of(text()));
    let what = (text(), of(tool()), of(server()), of(text()), of(any::<i64>()), of(text()), of(text()), of(text()));
    (who, what).prop_map(|((user_id, roles, teams, team_manager_of, scopes, mfa_verified, mfa_age_s, email), (action, tool, server, client_ip, now_ns, parameters_json, agent_json, context_json))| Eval {
        user_id,
        roles,
        teams,
        team_manager_of,
        scopes,
        mfa_verified,
        mfa_age_s,
        email,
        action,
        tool,
        server,
        client_ip,
        now_ns,
        parameters_json,
        agent_json,
        context_json,
    })
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (any::<u8>(), any::<u32>(), of(text())).prop_map(|(version, max_payload, token)| Request::Hello(Hello { version, max_payload, token })),
        eval().prop_map(|e| Request::Eval(Box::new(e))),
        (eval(), prop_oneof![Just(wire::Explain::Notes), Just(wire::Explain::Full)]).prop_map(|(e, level)| Request::EvalExplain(Box::new(e), level)),
        (text(), text()).prop_map(|(entrypoint, input_json)| Request::EvalJson(EvalJson { entrypoint, input_json })),
        vec(eval(), 1..4).prop_map(Request::EvalBatch),
        vec(any::<u8>(), 0..64).prop_map(Request::Ping),
        prop_oneof![Just(Invalidate::All), text().prop_map(Invalidate::User), text().prop_map(Invalidate::Tool), text().prop_map(Invalidate::Server)].prop_map(Request::Invalidate),
    ]
}

fn decision() -> impl Strategy<Value = Decision> {
    (any::<bool>(), any::<bool>(), any::<u32>(), any::<u128>(), any::<u16>(), vec((any::<u16>(), text()).prop_map(|(code, text)| Reason { code, text }), 0..4), of(text())).prop_map(
        |(allow, cache_hit, ttl_s, decision_id, error_code, reasons, filtered_parameters_json)| Decision { allow, cache_hit, ttl_s, decision_id, error_code, reasons, filtered_parameters_json },
    )
}

fn reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        (any::<u8>(), any::<u32>(), any::<u32>(), any::<u16>(), any::<u16>(), text(), text(), (any::<u8>(), prop::collection::vec(any::<u16>(), 0..20))).prop_map(|(version, max_payload, max_batch, shards, shard, bundle_revision, driver, (route, shard_ports))| Reply::HelloOk(Box::new(HelloOk {
            version,
            max_payload,
            max_batch,
            shards,
            shard,
            bundle_revision,
            driver,
            route,
            shard_ports,
        }))),
        decision().prop_map(Reply::Decision),
        (decision(), text()).prop_map(|(d, json)| Reply::Explanation(d, json)),
        of(text()).prop_map(Reply::Result),
        vec(decision(), 1..4).prop_map(Reply::DecisionBatch),
        vec(any::<u8>(), 0..64).prop_map(Reply::Pong),
        any::<bool>().prop_map(Reply::Invalidated),
        (any::<u16>(), text()).prop_map(|(code, message)| Reply::Error(ErrorReply { code, message })),
    ]
}

/// The one whole frame in `bytes`: its request id and payload.
fn whole(bytes: &[u8]) -> (wire::Header, &[u8]) {
    match check(bytes, DEFAULT_MAX_PAYLOAD).unwrap() {
        Check::Complete { header, total } => {
            assert_eq!(total, bytes.len(), "one frame, nothing after it");
            (header, &bytes[HEADER_LEN..total])
        }
        Check::Incomplete => panic!("a whole frame reported incomplete"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_request_round_trips(req in request(), id in any::<u64>()) {
        let mut bytes = Vec::new();
        encode_request(&mut bytes, id, &req);
        let (header, payload) = whole(&bytes);
        prop_assert_eq!(header.request_id, id);
        prop_assert_eq!(decode_request(&header, payload).unwrap(), req);
    }

    #[test]
    fn every_reply_round_trips(reply in reply(), id in any::<u64>()) {
        let mut bytes = Vec::new();
        encode_reply(&mut bytes, id, &reply);
        let (header, payload) = whole(&bytes);
        prop_assert_eq!(header.request_id, id);
        prop_assert_eq!(decode_reply(&header, payload).unwrap(), reply);
    }

    #[test]
    fn a_decision_view_decodes_to_the_decision_it_describes(d in decision(), id in any::<u64>()) {
        let texts: Vec<String> = d.reasons.iter().map(|r| r.text.clone()).collect();
        let view = DecisionView { allow: d.allow, cache_hit: d.cache_hit, ttl_s: d.ttl_s, decision_id: d.decision_id, error_code: d.error_code, reasons: &texts, filtered_parameters_json: d.filtered_parameters_json.as_deref() };
        let mut one = Vec::new();
        wire::encode_decision(&mut one, id, &view);
        let (header, payload) = whole(&one);
        // Every reason of a view carries the decision's error code.
        let want = Decision { reasons: d.reasons.iter().map(|r| Reason { code: d.error_code, text: r.text.clone() }).collect(), ..d.clone() };
        prop_assert_eq!(decode_reply(&header, payload).unwrap(), Reply::Decision(want.clone()));
        let mut explained = Vec::new();
        wire::encode_explanation(&mut explained, id, &view, "{}");
        let (header, payload) = whole(&explained);
        prop_assert_eq!(decode_reply(&header, payload).unwrap(), Reply::Explanation(want.clone(), "{}".into()));
        let mut batch = Vec::new();
        wire::encode_decision_batch(&mut batch, id, &[view, view]);
        let (header, payload) = whole(&batch);
        prop_assert_eq!(decode_reply(&header, payload).unwrap(), Reply::DecisionBatch(vec![want.clone(), want]));
    }

    #[test]
    fn a_frame_cut_short_is_incomplete(req in request(), cut in any::<prop::sample::Index>()) {
        let mut bytes = Vec::new();
        encode_request(&mut bytes, 7, &req);
        let at = cut.index(bytes.len());
        prop_assert_eq!(check(&bytes[..at], DEFAULT_MAX_PAYLOAD).unwrap(), Check::Incomplete);
    }
}
