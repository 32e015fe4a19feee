# MFA: required by sensitivity (high, critical), by destructive/admin actions, for listed
# tools, off-hours (outside business hours or not a business day) and off-network (a
# non-private client IP without VPN). When required: user.mfa_verified must be true and
# user.mfa_age_s at most max_age_s (3600), or critical_max_age_s (300) for critical
# resources (step-up).
package sark.mfa

import data.sark.common

cfg := data.sark_config.mfa

applies if "mfa" in object.get(data.sark_config.action_policies, common.action, [])

required_by contains "sensitivity" if common.level in cfg.required_levels

required_by contains "action" if common.action in cfg.required_actions

required_by contains "tool" if {
	common.tool_name != ""
	common.tool_name in cfg.required_tools
}

required_by contains "off_hours" if {
	cfg.require_off_hours == true
	common.now_valid
	not common.in_business_hours
}

required_by contains "off_network" if {
	cfg.require_off_network == true
	common.client_ip
	not common.private_ip
	not common.vpn
}

required if count(required_by) > 0

max_age := cfg.critical_max_age_s if common.level == "critical"

else := cfg.max_age_s

deny contains "mfa: multi-factor authentication required (user.mfa_verified)" if {
	applies
	required
	not common.mfa_verified
}

deny contains "mfa: MFA age unknown (user.mfa_age_s)" if {
	applies
	required
	common.mfa_verified
	not common.mfa_age_s
}

deny contains sprintf("mfa: MFA older than %d s", [max_age]) if {
	applies
	required
	common.mfa_verified
	common.mfa_age_s > max_age
}

default allow := false

allow if {
	applies
	count(deny) == 0
}
