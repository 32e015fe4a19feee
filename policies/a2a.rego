# Agent-to-agent (a2a:* actions):
#   - the action's capability (the part after "a2a:") must be in agent.capabilities;
#   - the trust level must be trusted, verified or untrusted;
#   - agent.environment and agent.target.environment are required; untrusted agents
#     may not cross environments; only the listed crossings are allowed
#     (staging -> prod, dev -> staging);
#   - agent.delegation_depth above max_delegation_depth (2) is denied.
# Restrictions by trust level (verified: rate limited + monitored; untrusted: also
# encrypted); crossing environments always requires encryption.
package sark.a2a

# data.sark.common is referenced by full path, never through `import`: regorus 0.14
# evaluates a whole imported package on every access through the alias (REGORUS-GAPS.md).

cfg := data.sark_config.a2a

applies if "a2a" in object.get(data.sark_config.action_policies, data.sark.common.action, [])

agent := data.sark.common.agent

capability := trim_prefix(data.sark.common.action, "a2a:")

capabilities := data.sark.common.str_set(object.get(agent, "capabilities", []))

trust := x if {
	x := object.get(agent, "trust_level", null)
	x in cfg.trust_levels
} else := "untrusted"

source_env := data.sark.common.str_field(agent, "environment")

target := x if {
	x := object.get(agent, "target", null)
	is_object(x)
} else := {}

target_env := data.sark.common.str_field(target, "environment")

depth := x if {
	x := object.get(agent, "delegation_depth", null)
	is_number(x)
} else := 0

crossing if source_env != target_env

crossing_allowed if {
	some c in cfg.allowed_crossings
	c.from == source_env
	c.to == target_env
}

deny contains sprintf("a2a: agent lacks capability %s", [capability]) if {
	applies
	count(agent) > 0
	not capability in capabilities
}

deny contains "a2a: agent.trust_level must be trusted, verified or untrusted" if {
	applies
	count(agent) > 0
	t := object.get(agent, "trust_level", null)
	not t in cfg.trust_levels
}

deny contains "a2a: agent.environment and agent.target.environment are required" if {
	applies
	count(agent) > 0
	"" in {source_env, target_env}
}

deny contains "a2a: untrusted agents may not cross environments" if {
	applies
	source_env != ""
	target_env != ""
	crossing
	trust == "untrusted"
}

deny contains sprintf("a2a: environment crossing %s -> %s is not allowed", [source_env, target_env]) if {
	applies
	source_env != ""
	target_env != ""
	crossing
	not crossing_allowed
}

deny contains sprintf("a2a: delegation depth exceeds the maximum of %d", [cfg.max_delegation_depth]) if {
	applies
	depth > cfg.max_delegation_depth
}

restrictions := {
	"rate_limited": cfg.restrictions[trust].rate_limited,
	"monitoring_required": cfg.restrictions[trust].monitoring_required,
	"encryption_required": encryption_required,
} if applies

else := {"rate_limited": false, "monitoring_required": false, "encryption_required": false}

encryption_required if cfg.restrictions[trust].encryption_required == true

encryption_required if {
	cfg.cross_environment_encryption == true
	source_env != ""
	target_env != ""
	crossing
}

default encryption_required := false

default allow := false

allow if {
	applies
	count(deny) == 0
}
