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

# Every accessor below is a rule (cached once per evaluation), never a function call:
# regorus re-evaluates a function on every call (REGORUS-GAPS.md, "Speed").

user_id := x if {
	x := user.id
	is_string(x)
} else := ""

authenticated if {
	user_id != ""
	not user.authenticated == false
}

# The strings of an array field (anything else: the empty set).
roles contains s if {
	xs := user.roles
	is_array(xs)
	some s in xs
	is_string(s)
}

teams contains s if {
	xs := user.teams
	is_array(xs)
	some s in xs
	is_string(s)
}

managed_teams contains s if {
	xs := user.team_manager_of
	is_array(xs)
	some s in xs
	is_string(s)
}

scopes contains s if {
	xs := user.scopes
	is_array(xs)
	some s in xs
	is_string(s)
}

is_admin if "admin" in roles

mfa_verified if user.mfa_verified == true

mfa_age_s := x if {
	x := user.mfa_age_s
	is_number(x)
	x >= 0
}

# ---------------------------------------------------------------- the resource

tool_name := x if {
	x := tool.name
	is_string(x)
} else := ""

tool_owner := x if {
	x := tool.owner
	is_string(x)
} else := ""

server_id := x if {
	x := server.id
	is_string(x)
} else := ""

server_name := x if {
	x := server.name
	is_string(x)
} else := ""

server_owner := x if {
	x := server.owner_id
	is_string(x)
} else := ""

server_managing_team := x if {
	x := server.managed_by_team
	is_string(x)
} else := ""

tool_managers contains s if {
	xs := tool.managers
	is_array(xs)
	some s in xs
	is_string(s)
}

allowed_teams contains s if {
	xs := tool.allowed_teams
	is_array(xs)
	some s in xs
	is_string(s)
}

allowed_teams contains s if {
	xs := server.allowed_teams
	is_array(xs)
	some s in xs
	is_string(s)
}

# Teams that own the resource (tool and/or server teams, the server's managing team).
resource_teams contains s if {
	xs := tool.teams
	is_array(xs)
	some s in xs
	is_string(s)
}

resource_teams contains s if {
	xs := server.teams
	is_array(xs)
	some s in xs
	is_string(s)
}

resource_teams contains server_managing_team if server_managing_team != ""

# The resource's name for messages.
resource_name := tool_name if tool_name != ""

else := server_name if server_name != ""

else := server_id if server_id != ""

else := "(unnamed)"

is_owner if {
	user_id != ""
	user_id in {tool_owner, server_owner}
}

is_team_member if count(teams & resource_teams) > 0

is_team_member if count(teams & allowed_teams) > 0

is_team_manager if count(managed_teams & resource_teams) > 0

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

# context.client_ip when it is a string (valid or not).
client_ip_str := x if {
	x := ctx.client_ip
	is_string(x)
}

# An IPv4 address: four decimal octets 0-255 without leading zeros (what the regex
# `^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|...)$` accepts), checked
# by looking each octet up in data.sark_config.ipv4_octets: no regex on the hot path.
client_ipv4 if {
	parts := split(client_ip_str, ".")
	count(parts) == 4
	octets := cfg.ipv4_octets
	octets[parts[0]]
	octets[parts[1]]
	octets[parts[2]]
	octets[parts[3]]
}

ipv6_re := `^[0-9a-fA-F]{0,4}(:[0-9a-fA-F]{0,4}){2,7}$`

# An IPv6 address (loosely, by regex). An IPv4 address never contains ":".
client_ipv6 if {
	x := client_ip_str
	contains(x, ":")
	regex.match(ipv6_re, x)
}

valid_client_ip if client_ipv4

valid_client_ip if client_ipv6

client_ip := x if {
	x := client_ip_str
	valid_client_ip
}

# Whether an allow/block list entry (exact address, CIDR or "*") matches the client's
# address. A CIDR is only handed to net.cidr_contains for an address of its own family.
# Undefined when there is no valid client_ip.
client_in_list(list) if {
	client_ip
	"*" in list
}

client_in_list(list) if client_ip in list

client_in_list(list) if {
	client_ipv4
	some entry in list
	is_string(entry)
	contains(entry, "/")
	not contains(entry, ":")
	net.cidr_contains(entry, client_ip)
}

client_in_list(list) if {
	client_ipv6
	some entry in list
	is_string(entry)
	contains(entry, "/")
	contains(entry, ":")
	net.cidr_contains(entry, client_ip)
}

private_ip if client_in_list(cfg.ip_filtering.private_ranges)

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

# Expected types of the optional fields, by part of the input (a field that is null or
# absent is not checked). One constant table, iterated once per part.
type_checks := {
	"user": {"roles": "array", "teams": "array", "team_manager_of": "array", "scopes": "array", "mfa_verified": "boolean", "mfa_age_s": "number"},
	"tool": {"teams": "array", "managers": "array"},
	"server": {"teams": "array"},
	"context": {"client_ip": "string", "rate_limit_data": "object"},
	"agent": {"capabilities": "array", "delegation_depth": "number", "target": "object"},
}

input_part_types := {"user": "object", "tool": "object", "server": "object", "agent": "object", "context": "object", "parameters": "object"}

# object.filter keeps only the checked fields that are present, so each loop runs over
# those alone (REGORUS-GAPS.md, "Speed").
input_errors contains sprintf("input: %s must be of type %s", [key, want]) if {
	some key, v in object.filter(inp, input_part_types)
	v != null
	want := input_part_types[key]
	type_name(v) != want
}

input_errors contains sprintf("input: %s.%s must be of type %s", [part, key, want]) if {
	some part, obj in {"user": user, "tool": tool, "server": server, "context": ctx, "agent": agent}
	checks := type_checks[part]
	some key, v in object.filter(obj, checks)
	v != null
	want := checks[key]
	type_name(v) != want
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
	client_ip_str
	not valid_client_ip
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
