# Team access: user.teams / team_manager_of / ownership against the resource's teams.
#  - admins pass; public + low resources are open to everyone;
#  - a resource with teams needs a member (or owner, or an allowed team);
#  - high and critical resources must belong to a team;
#  - critical tools need a manager of one of the tool's teams (or a listed manager);
#  - server:update / server:delete need the owner or a manager of one of its teams;
#  - registering a high server needs membership, a critical one management, of one
#    of the teams it is registered with.
package sark.team_access

# data.sark.common is referenced by full path, never through `import`: regorus 0.14
# evaluates a whole imported package on every access through the alias (REGORUS-GAPS.md).

applies if "team_access" in object.get(data.sark_config.action_policies, data.sark.common.action, [])

exempt if data.sark.common.is_admin

open_resource if {
	data.sark.common.public_resource
	data.sark.common.level == "low"
}

member if data.sark.common.is_team_member

member if data.sark.common.is_owner

member if data.sark.common.is_team_manager

use_actions := {"tool:invoke", "tool:deploy", "server:read"}

modify_actions := {"server:update", "server:delete"}

deny contains sprintf("team_access: user is not a member of any team of %s", [data.sark.common.resource_name]) if {
	applies
	not exempt
	data.sark.common.action in use_actions
	count(data.sark.common.resource_teams) > 0
	not open_resource
	not member
}

deny contains sprintf("team_access: %s resources must belong to a team", [data.sark.common.level]) if {
	applies
	not exempt
	data.sark.common.high_or_critical
	count(data.sark.common.resource_teams) == 0
	data.sark.common.action != "server:register"
}

deny contains sprintf("team_access: critical tools require a manager of one of the tool's teams (%s)", [data.sark.common.resource_name]) if {
	applies
	not exempt
	data.sark.common.action in {"tool:invoke", "tool:deploy"}
	data.sark.common.level == "critical"
	not data.sark.common.is_team_manager
}

deny contains sprintf("team_access: %s requires the owner or a manager of one of the server's teams", [data.sark.common.action]) if {
	applies
	not exempt
	data.sark.common.action in modify_actions
	not data.sark.common.is_owner
	not data.sark.common.is_team_manager
}

deny contains "team_access: high and critical servers must be registered with at least one team" if {
	applies
	data.sark.common.action == "server:register"
	data.sark.common.high_or_critical
	count(data.sark.common.resource_teams) == 0
}

deny contains "team_access: registering a high server requires membership in one of its teams" if {
	applies
	not exempt
	data.sark.common.action == "server:register"
	data.sark.common.level == "high"
	count(data.sark.common.resource_teams) > 0
	not data.sark.common.is_team_member
	not data.sark.common.is_team_manager
}

deny contains "team_access: registering a critical server requires managing one of its teams" if {
	applies
	not exempt
	data.sark.common.action == "server:register"
	data.sark.common.level == "critical"
	count(data.sark.common.resource_teams) > 0
	not data.sark.common.is_team_manager
}

default allow := false

allow if {
	applies
	count(deny) == 0
}
