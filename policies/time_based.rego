# Time-based access: business hours (data.sark_config.time_based.business_hours,
# default Mon-Fri 09:00-17:00 UTC) for time-restricted requests:
#   - resources of a restricted level (high, critical),
#   - restricted actions (server:delete, tool:deploy),
#   - users whose every role is a restricted role (viewer).
# Admins are exempt. A complete emergency override lifts the restriction, and so does
# a maintenance window that lists the action. The time is input.context.now_ns (never
# time.now_ns()), so decisions are reproducible; without it time-restricted access is
# denied.
package sark.time_based

# data.sark.common is referenced by full path, never through `import`: regorus 0.14
# evaluates a whole imported package on every access through the alias (REGORUS-GAPS.md).

cfg := data.sark_config.time_based

applies if "time_based" in object.get(data.sark_config.action_policies, data.sark.common.action, [])

exempt if {
	some r in data.sark.common.roles
	r in cfg.exempt_roles
}

restricted_by contains "sensitivity" if data.sark.common.level in cfg.restricted_levels

restricted_by contains "action" if data.sark.common.action in cfg.restricted_actions

restricted_by contains "role" if {
	count(data.sark.common.roles) > 0
	every r in data.sark.common.roles {
		r in cfg.restricted_roles
	}
}

restricted if count(restricted_by) > 0

lifted if exempt

lifted if data.sark.common.emergency_valid

lifted if data.sark.common.in_maintenance_for_action

deny contains "time_based: context.now_ns missing or invalid; time-restricted access denied" if {
	applies
	restricted
	not exempt
	not data.sark.common.emergency_valid
	not data.sark.common.now_valid
}

deny contains "time_based: outside business hours" if {
	applies
	restricted
	not lifted
	data.sark.common.now_valid
	not data.sark.common.within_hours
}

deny contains "time_based: not a business day" if {
	applies
	restricted
	not lifted
	data.sark.common.now_valid
	not data.sark.common.business_day
}

deny contains "time_based: emergency_override requires emergency_reason and emergency_approver" if {
	applies
	restricted
	not lifted
	data.sark.common.emergency_override
	not data.sark.common.emergency_valid
}

default allow := false

allow if {
	applies
	count(deny) == 0
}
