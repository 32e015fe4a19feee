# MFA: required by sensitivity (high, critical), by destructive/admin actions, for listed
# tools, off-hours (outside business hours or not a business day) and off-network (a
# non-private client IP without VPN). When required: user.mfa_verified must be true and
# user.mfa_age_s at most max_age_s (3600), or critical_max_age_s (300) for critical
# resources (step-up).
package sark.mfa

# data.sark.common is referenced by full path, never through `import`: regorus 0.14
# evaluates a whole imported package on every access through the alias (REGORUS-GAPS.md).

cfg := data.sark_config.mfa

applies if "mfa" in object.get(data.sark_config.action_policies, data.sark.common.action, [])

required_by contains "sensitivity" if data.sark.common.level in cfg.required_levels

required_by contains "action" if data.sark.common.action in cfg.required_actions

required_by contains "tool" if {
	data.sark.common.tool_name != ""
	data.sark.common.tool_name in cfg.required_tools
}

required_by contains "off_hours" if {
	cfg.require_off_hours == true
	data.sark.common.now_valid
	not data.sark.common.in_business_hours
}

required_by contains "off_network" if {
	cfg.require_off_network == true
	data.sark.common.client_ip
	not data.sark.common.private_ip
	not data.sark.common.vpn
}

required if count(required_by) > 0

max_age := cfg.critical_max_age_s if data.sark.common.level == "critical"

else := cfg.max_age_s

deny contains "mfa: multi-factor authentication required (user.mfa_verified)" if {
	applies
	required
	not data.sark.common.mfa_verified
}

deny contains "mfa: MFA age unknown (user.mfa_age_s)" if {
	applies
	required
	data.sark.common.mfa_verified
	not data.sark.common.mfa_age_s
}

deny contains sprintf("mfa: MFA older than %d s", [max_age]) if {
	applies
	required
	data.sark.common.mfa_verified
	data.sark.common.mfa_age_s > max_age
}

default allow := false

allow if {
	applies
	count(deny) == 0
}
