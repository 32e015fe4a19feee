# Rate limits (stateless): the caller passes its counts in context.rate_limit_data
# {minute_count, hour_count, day_count}; minute_count counts this request too, so a
# count equal to the limit is allowed. Per-minute limits: by role (the most generous of
# the user's roles; admin 1000, developer 500, everyone else 100) and by the resource's
# sensitivity (critical 10, high 50, medium 200, low 500). No counts: no limit hit.
package sark.rate_limits

# data.sark.common is referenced by full path, never through `import`: regorus 0.14
# evaluates a whole imported package on every access through the alias (REGORUS-GAPS.md).

cfg := data.sark_config.rate_limits

applies if "rate_limits" in object.get(data.sark_config.action_policies, data.sark.common.action, [])

counts := x if {
	x := object.get(data.sark.common.ctx, "rate_limit_data", null)
	is_object(x)
} else := {}

minute_count := x if {
	x := object.get(counts, "minute_count", null)
	is_number(x)
} else := 0

role_limit := max({cfg.per_minute_default} | {l | some r in data.sark.common.roles; l := cfg.per_minute_by_role[r]})

level_limit := object.get(cfg.per_minute_by_level, data.sark.common.level, cfg.per_minute_default)

deny contains sprintf("rate_limits: per-minute limit of %d requests for the user's role exceeded", [role_limit]) if {
	applies
	minute_count > role_limit
}

deny contains sprintf("rate_limits: per-minute limit of %d requests for %s resources exceeded", [level_limit, data.sark.common.level]) if {
	applies
	minute_count > level_limit
}

default allow := false

allow if {
	applies
	count(deny) == 0
}
