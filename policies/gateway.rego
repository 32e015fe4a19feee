# Gateway (gateway:* actions): admin, developer, a member of the server's managing team
# or the server's owner may use the gateway; gateway:tool:invoke names a tool.
#
# Parameter filtering: filtered_parameters is input.parameters without the parameters
# whose (lower-cased) name contains a sensitive word for the resource's level
# (data.sark_config.gateway.sensitive_parameters). Nested objects are filtered too, up to
# four levels deep; values that are arrays are kept as they are.
#
# Compat: data.sark.gateway.allow (SARK's /v1/data/sark/gateway/allow) is the complete
# decision for a gateway:* action (every applicable policy, not only this one), false for
# any other action. The decision itself reads this package's applies/deny only.
package sark.gateway

# data.sark.common is referenced by full path, never through `import`: regorus 0.14
# evaluates a whole imported package on every access through the alias (REGORUS-GAPS.md).

cfg := data.sark_config.gateway

applies if "gateway" in object.get(data.sark_config.action_policies, data.sark.common.action, [])

authorized_by contains "role" if {
	some r in data.sark.common.roles
	r in cfg.roles
}

authorized_by contains "managing_team" if {
	data.sark.common.server_managing_team != ""
	data.sark.common.server_managing_team in data.sark.common.teams
}

authorized_by contains "owner" if {
	data.sark.common.user_id != ""
	data.sark.common.user_id == data.sark.common.server_owner
}

deny contains "gateway: requires role admin or developer, the server's managing team, or the server's owner" if {
	applies
	count(authorized_by) == 0
}

deny contains "gateway: gateway:tool:invoke requires tool.name" if {
	applies
	data.sark.common.action == "gateway:tool:invoke"
	data.sark.common.tool_name == ""
}

default policy_allow := false

policy_allow if {
	applies
	count(deny) == 0
}

default allow := false

allow if {
	applies
	data.sark.decision.allow == true
}

# ---------------------------------------------------------------- parameter filtering

sensitive_words := object.get(cfg.sensitive_parameters, data.sark.common.level, cfg.sensitive_parameters.critical)

sensitive_name(name) if {
	n := lower(name)
	some w in sensitive_words
	contains(n, w)
}

# Rego has no recursion: one function per depth.
filter_1(o) := {k: filter_2v(v) | some k, v in o; not sensitive_name(k)}

filter_2v(v) := {k: filter_3v(x) | some k, x in v; not sensitive_name(k)} if is_object(v)

filter_2v(v) := v if not is_object(v)

filter_3v(v) := {k: filter_4v(x) | some k, x in v; not sensitive_name(k)} if is_object(v)

filter_3v(v) := v if not is_object(v)

filter_4v(v) := {k: x | some k, x in v; not sensitive_name(k)} if is_object(v)

filter_4v(v) := v if not is_object(v)

filtered_parameters := filter_1(data.sark.common.parameters)
