# SARK's decision document: data.sark.decision.
#
# Which policies apply to an action: data.sark_config.action_policies. Each policy
# package exposes `applies` (bool), `deny` (set of reason strings) and `allow`. The
# decision allows only when the action is known, the input is well formed, at least one
# policy applies and no applicable policy denies. It is defined for every input.
package sark

# data.sark.common is referenced by full path, never through `import`: regorus 0.14
# evaluates a whole imported package on every access through the alias (REGORUS-GAPS.md).

# Every policy package by name.
policy_names := {"a2a", "gateway", "ip_filtering", "mfa", "rate_limits", "rbac", "sensitivity", "team_access", "time_based"}

configured := object.get(data.sark_config.action_policies, data.sark.common.action, [])

applied := {p | some p in configured; is_string(p); p in policy_names}

unknown_policies := {p | some p in configured; not p in policy_names}

# The deny sets of the applied policies only: a policy that does not apply to the action
# is never evaluated (one body per policy, each guarded by a cached membership test).
policy_denies[p] := data.sark.a2a.deny if {
	p := "a2a"
	p in applied
}

policy_denies[p] := data.sark.gateway.deny if {
	p := "gateway"
	p in applied
}

policy_denies[p] := data.sark.ip_filtering.deny if {
	p := "ip_filtering"
	p in applied
}

policy_denies[p] := data.sark.mfa.deny if {
	p := "mfa"
	p in applied
}

policy_denies[p] := data.sark.rate_limits.deny if {
	p := "rate_limits"
	p in applied
}

policy_denies[p] := data.sark.rbac.deny if {
	p := "rbac"
	p in applied
}

policy_denies[p] := data.sark.sensitivity.deny if {
	p := "sensitivity"
	p in applied
}

policy_denies[p] := data.sark.team_access.deny if {
	p := "team_access"
	p in applied
}

policy_denies[p] := data.sark.time_based.deny if {
	p := "time_based"
	p in applied
}

decision_errors contains sprintf("decision: unknown action %s", [data.sark.common.action]) if {
	data.sark.common.action != ""
	not data.sark.common.known_action
}

decision_errors contains "decision: no policy applies to this action" if {
	data.sark.common.known_action
	count(applied) == 0
}

decision_errors contains "decision: configuration names an unknown policy" if count(unknown_policies) > 0

input_errors := data.sark.common.input_errors | decision_errors

policy_deny_reasons := {r | some d in policy_denies; some r in d}

deny_reasons := input_errors | policy_deny_reasons

default allow := false

allow if {
	count(applied) > 0
	count(deny_reasons) == 0
}

reasons := sort(deny_reasons) if count(deny_reasons) > 0

else := ["allowed: all policies passed"] if allow

else := ["denied: no policy allowed the request"]

policy_results := {p: ok | some p, d in policy_denies; ok := count(d) == 0}

# ---------------------------------------------------------------- cache TTL

base_ttl := object.get(data.sark_config.cache.ttl_s, data.sark.common.level, data.sark_config.cache.default_ttl_s)

# Policies whose answer can change with the clock.
time_policies := {"time_based", "sensitivity", "mfa"}

time_dependent if {
	some p in applied
	p in time_policies
}

# Missing or malformed input (or an unknown action): do not cache.
no_cache if count(input_errors) > 0

# The clock mattered but was not given: do not cache.
no_cache if {
	time_dependent
	not data.sark.common.now_valid
}

cache_ttl_s := 0 if no_cache

else := min({base_ttl, data.sark.common.seconds_to_boundary}) if time_dependent

else := base_ttl

# ---------------------------------------------------------------- the document

decision := {
	"allow": allow,
	"reasons": reasons,
	"policies_evaluated": sort(applied),
	"policy_results": policy_results,
	"filtered_parameters": data.sark.gateway.filtered_parameters,
	"cache_ttl_s": cache_ttl_s,
	"restrictions": data.sark.a2a.restrictions,
}
