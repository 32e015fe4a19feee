# Sensitivity: what each level of the resource (tool, else server; else classified)
# requires. Levels are cumulative:
#   low      an authenticated user (user.id present, user.authenticated not false)
#   medium   + role developer or admin            (data: sensitivity.medium_roles)
#   high     + membership in one of the resource's teams, business hours,
#              context.audit_enabled
#   critical + manager of one of its teams, business hours on a business day,
#              context.audit_enabled, user.mfa_verified
# Admins are exempt from the team and time requirements (not from audit and MFA).
# Out-of-hours high/critical access only with a complete emergency override
# (emergency_override + emergency_reason + emergency_approver).
# Non-admins may not downgrade a resource's sensitivity (parameters.new_sensitivity_level
# lower than the current level).
package sark.sensitivity

# data.sark.common is referenced by full path, never through `import`: regorus 0.14
# evaluates a whole imported package on every access through the alias (REGORUS-GAPS.md).

cfg := data.sark_config.sensitivity

applies if "sensitivity" in object.get(data.sark_config.action_policies, data.sark.common.action, [])

exempt if {
	some r in data.sark.common.roles
	r in cfg.exempt_roles
}

lvl := data.sark.common.level

rank := data.sark.common.level_rank

has_medium_role if {
	some r in data.sark.common.roles
	r in cfg.medium_roles
}

time_exempt if exempt

time_exempt if data.sark.common.emergency_valid

deny contains sprintf("sensitivity: %s resources require an authenticated user", [lvl]) if {
	applies
	not data.sark.common.authenticated
}

deny contains sprintf("sensitivity: %s resources require role developer or admin", [lvl]) if {
	applies
	rank >= 2
	not has_medium_role
}

deny contains sprintf("sensitivity: %s resources require membership in one of the resource's teams", [lvl]) if {
	applies
	lvl == "high"
	not exempt
	not data.sark.common.is_team_member
	not data.sark.common.is_team_manager
	not data.sark.common.is_owner
}

deny contains "sensitivity: critical resources require a manager of one of the resource's teams" if {
	applies
	lvl == "critical"
	not exempt
	not data.sark.common.is_team_manager
}

deny contains sprintf("sensitivity: %s resources require context.audit_enabled", [lvl]) if {
	applies
	rank >= 3
	not data.sark.common.ctx.audit_enabled == true
}

deny contains "sensitivity: critical resources require user.mfa_verified" if {
	applies
	lvl == "critical"
	not data.sark.common.mfa_verified
}

deny contains sprintf("sensitivity: %s resources need the current time (context.now_ns)", [lvl]) if {
	applies
	rank >= 3
	not time_exempt
	not data.sark.common.now_valid
}

deny contains sprintf("sensitivity: %s resources are only available during business hours", [lvl]) if {
	applies
	rank >= 3
	not time_exempt
	data.sark.common.now_valid
	not data.sark.common.within_hours
}

deny contains "sensitivity: critical resources are only available on business days" if {
	applies
	lvl == "critical"
	not time_exempt
	data.sark.common.now_valid
	not data.sark.common.business_day
}

deny contains "sensitivity: emergency_override requires emergency_reason and emergency_approver" if {
	applies
	rank >= 3
	data.sark.common.emergency_override
	not data.sark.common.emergency_valid
}

new_level := lower(data.sark.common.parameters.new_sensitivity_level) if {
	data.sark.common.valid_level(data.sark.common.parameters.new_sensitivity_level)
}

downgrade if data.sark_config.level_rank[new_level] < rank

deny contains sprintf("sensitivity: only admins may downgrade sensitivity from %s to %s", [lvl, new_level]) if {
	applies
	downgrade
	not data.sark.common.is_admin
}

default allow := false

allow if {
	applies
	count(deny) == 0
}
