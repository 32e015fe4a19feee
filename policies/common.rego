# Shared, type-safe views of the input document used by every SARK policy.
#
# Every accessor here is defined for every input (including `{}`, a non-object
# input and wrongly typed fields): a field of the wrong type reads as absent, and
# `input_errors` reports it so the decision denies with a reason (fail closed).
# No builtin is ever called with an argument that could make it error.
package sark.common

cfg := data.sark_config

level_set := {l | some l in cfg.levels}

# ---------------------------------------------------------------- input parts

inp := input if is_object(input)

else := {}

action := x if {
	x := inp.action
	is_string(x)
} else := ""

user := x if {
	x := inp.user
	is_object(x)
} else := {}

tool := x if {
	x := inp.tool
	is_object(x)
} else := {}

server := x if {
	x := inp.server
	is_object(x)
} else := {}

agent := x if {
	x := inp.agent
	is_object(x)
} else := {}

ctx := x if {
	x := inp.context
	is_object(x)
} else := {}

parameters := x if {
	x := inp.parameters
	is_object(x)
} else := {}

# ---------------------------------------------------------------- helpers

# The strings of an array (anything else: the empty set).
str_set(x) := {s | some s in x; is_string(s)} if is_array(x)

str_set(x) := set() if not is_array(x)

# A non-empty string field of an object, or "".
str_field(obj, key) := x if {
	x := object.get(obj, key, "")
	is_string(x)
} else := ""

# The action's prefix family: "tool", "server", "policy", "gateway", "a2a".
action_family := split(action, ":")[0]

known_action if object.get(cfg.action_policies, action, null) != null

is_a2a if action_family == "a2a"

# ---------------------------------------------------------------- the user

user_id := str_field(user, "id")

authenticated if {
	user_id != ""
	not user.authenticated == false
}

roles := str_set(object.get(user, "roles", []))

teams := str_set(object.get(user, "teams", []))

managed_teams := str_set(object.get(user, "team_manager_of", []))

scopes := str_set(object.get(user, "scopes", []))

is_admin if "admin" in roles

mfa_verified if user.mfa_verified == true

mfa_age_s := x if {
	x := user.mfa_age_s
	is_number(x)
	x >= 0
}

# ---------------------------------------------------------------- the resource

tool_name := str_field(tool, "name")

tool_owner := str_field(tool, "owner")

server_id := str_field(server, "id")

server_owner := str_field(server, "owner_id")

server_managing_team := str_field(server, "managed_by_team")

tool_teams := str_set(object.get(tool, "teams", []))

tool_managers := str_set(object.get(tool, "managers", []))

server_teams := str_set(object.get(server, "teams", []))

allowed_teams := str_set(object.get(tool, "allowed_teams", [])) | str_set(object.get(server, "allowed_teams", []))

managing_team_set := {server_managing_team | server_managing_team != ""}

# Teams that own the resource (tool and/or server).
resource_teams := (tool_teams | server_teams) | managing_team_set

# The resource's name for messages.
resource_name := tool_name if tool_name != ""

else := str_field(server, "name") if str_field(server, "name") != ""

else := server_id if server_id != ""

else := "(unnamed)"

is_owner if {
	user_id != ""
	user_id in {tool_owner, server_owner}
}

is_team_member if {
	some t in teams
	t in resource_teams
}

is_team_member if {
	some t in teams
	t in allowed_teams
}

is_team_manager if {
	some t in managed_teams
	t in resource_teams
}

is_team_manager if {
	user_id != ""
	user_id in tool_managers
}

public_resource if tool.visibility == "public"

public_resource if {
	count(tool) == 0
	server.visibility == "public"
}

# Declared sensitivity: the tool's, else the server's; lower-cased.
declared_level := l if {
	s := tool.sensitivity_level
	is_string(s)
	l := lower(s)
	l in level_set
} else := l if {
	s := server.sensitivity_level
	is_string(s)
	l := lower(s)
	l in level_set
}

# The sensitivity the decision works with: declared, else classified from the tool
# (name, description, parameter names), which defaults to medium.
level := l if {
	declared_level
	l := declared_level
} else := data.sark.classification.level

level_rank := cfg.level_rank[level]

high_or_critical if level in {"high", "critical"}

# ---------------------------------------------------------------- time

# context.now_ns: integer nanoseconds since the epoch, UTC. Anything else is "no time".
now_ns := x if {
	x := ctx.now_ns
	is_number(x)
	x >= 0
	x < cfg.time_based.max_now_ns
	x == floor(x)
}

now_valid if now_ns

hours := cfg.time_based.business_hours

start_s := hours.start_hour * 3600

end_s := hours.end_hour * 3600

clock := time.clock(now_ns)

second_of_day := ((clock[0] * 3600) + (clock[1] * 60)) + clock[2]

weekday := time.weekday(now_ns)

business_day if weekday in hours.days

within_hours if {
	second_of_day >= start_s
	second_of_day < end_s
}

in_business_hours if {
	business_day
	within_hours
}

# The maintenance windows now_ns falls in.
active_windows contains w if {
	some w in cfg.time_based.maintenance_windows
	now_ns >= w.start_ns
	now_ns < w.end_ns
}

in_maintenance_for_action if {
	some w in active_windows
	action in w.allowed_actions
}

# Seconds from now until the next time the answer of a time rule can change: the next
# business-hours start or end, midnight (the day changes), or a maintenance window's
# start or end. At least 1.
boundary_candidates contains b - second_of_day if {
	some b in {start_s, end_s, 86400}
	b > second_of_day
}

boundary_candidates contains s if {
	some w in cfg.time_based.maintenance_windows
	w.start_ns > now_ns
	s := floor((w.start_ns - now_ns) / 1000000000)
}

boundary_candidates contains s if {
	some w in active_windows
	s := floor((w.end_ns - now_ns) / 1000000000)
}

seconds_to_boundary := max({1, min(boundary_candidates)})

# ---------------------------------------------------------------- emergency override

emergency_override if ctx.emergency_override == true

emergency_valid if {
	emergency_override
	str_field(ctx, "emergency_reason") != ""
	str_field(ctx, "emergency_approver") != ""
}

# ---------------------------------------------------------------- network

client_ip := x if {
	x := ctx.client_ip
	is_string(x)
	valid_ip(x)
}

ipv4_re := `^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$`

ipv6_re := `^[0-9a-fA-F]{0,4}(:[0-9a-fA-F]{0,4}){2,7}$`

is_ipv4(x) if regex.match(ipv4_re, x)

is_ipv6(x) if {
	not regex.match(ipv4_re, x)
	regex.match(ipv6_re, x)
}

valid_ip(x) if is_ipv4(x)

valid_ip(x) if is_ipv6(x)

# Whether an allow/block list entry (exact address, CIDR or "*") matches the ip. A CIDR
# is only handed to net.cidr_contains for an address of its own family.
ip_matches(entry, ip) if {
	entry == "*"
	is_string(ip)
}

ip_matches(entry, ip) if {
	not contains(entry, "/")
	entry == ip
}

ip_matches(entry, ip) if {
	contains(entry, "/")
	not contains(entry, ":")
	is_ipv4(ip)
	net.cidr_contains(entry, ip)
}

ip_matches(entry, ip) if {
	contains(entry, "/")
	contains(entry, ":")
	is_ipv6(ip)
	net.cidr_contains(entry, ip)
}

ip_in_list(list, ip) if {
	some entry in list
	is_string(entry)
	ip_matches(entry, ip)
}

private_ip if ip_in_list(cfg.ip_filtering.private_ranges, client_ip)

vpn if ctx.vpn == true

# ---------------------------------------------------------------- input validation

# Type errors: a field that is present but of the wrong type. Each denies the
# decision (and the decision is not cached).
# `input` itself, or null when the caller gave none (OPA leaves it undefined then).
raw_input := x if {
	x := input
} else := null

input_errors contains "input: must be an object" if not is_object(raw_input)

input_errors contains "input: action is missing or not a string" if action == ""

input_errors contains "input: user is missing or not an object" if {
	not is_a2a
	count(user) == 0
}

input_errors contains "input: agent is missing or not an object" if {
	is_a2a
	count(agent) == 0
}

bad_type(obj, key, pred) if {
	v := object.get(obj, key, null)
	v != null
	not type_ok(v, pred)
}

type_ok(v, t) if {
	t == "array"
	is_array(v)
}

type_ok(v, t) if {
	t == "object"
	is_object(v)
}

type_ok(v, t) if {
	t == "string"
	is_string(v)
}

type_ok(v, t) if {
	t == "boolean"
	is_boolean(v)
}

type_ok(v, t) if {
	t == "number"
	is_number(v)
}

input_type_checks := [
	["input", "user", "object"],
	["input", "tool", "object"],
	["input", "server", "object"],
	["input", "agent", "object"],
	["input", "context", "object"],
	["input", "parameters", "object"],
	["user", "roles", "array"],
	["user", "teams", "array"],
	["user", "team_manager_of", "array"],
	["user", "scopes", "array"],
	["user", "mfa_verified", "boolean"],
	["user", "mfa_age_s", "number"],
	["tool", "teams", "array"],
	["tool", "managers", "array"],
	["server", "teams", "array"],
	["context", "client_ip", "string"],
	["context", "rate_limit_data", "object"],
	["agent", "capabilities", "array"],
	["agent", "delegation_depth", "number"],
	["agent", "target", "object"],
]

parts := {"input": inp, "user": user, "tool": tool, "server": server, "agent": agent, "context": ctx}

input_errors contains sprintf("input: %s must be of type %s", [key, typ]) if {
	some check in input_type_checks
	[part, key, typ] := check
	part == "input"
	bad_type(inp, key, typ)
}

input_errors contains sprintf("input: %s.%s must be of type %s", [part, key, typ]) if {
	some check in input_type_checks
	[part, key, typ] := check
	part != "input"
	bad_type(parts[part], key, typ)
}

input_errors contains "input: user.roles must be an array of strings" if {
	rs := object.get(user, "roles", [])
	is_array(rs)
	some r in rs
	not is_string(r)
}

input_errors contains "input: context.now_ns must be an integer number of nanoseconds since the epoch" if {
	object.get(ctx, "now_ns", null) != null
	not now_valid
}

input_errors contains "input: context.client_ip is not an IP address" if {
	x := ctx.client_ip
	is_string(x)
	not valid_ip(x)
}

input_errors contains "input: sensitivity_level must be one of low, medium, high, critical" if {
	some obj in [tool, server]
	s := object.get(obj, "sensitivity_level", null)
	s != null
	not valid_level(s)
}

input_errors contains "input: parameters.new_sensitivity_level must be one of low, medium, high, critical" if {
	s := object.get(parameters, "new_sensitivity_level", null)
	s != null
	not valid_level(s)
}

input_errors contains "input: context.rate_limit_data counts must be numbers" if {
	rl := object.get(ctx, "rate_limit_data", {})
	is_object(rl)
	some k in ["minute_count", "hour_count", "day_count"]
	v := object.get(rl, k, 0)
	not is_number(v)
}

valid_level(s) if {
	is_string(s)
	lower(s) in level_set
}
