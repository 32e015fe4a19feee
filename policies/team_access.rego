# Team access: user.teams / team_manager_of / ownership against the resource's teams.
#  - admins pass; public + low resources are open to everyone;
#  - a resource with teams needs a member (or owner, or an allowed team);
#  - high and critical resources must belong to a team;
#  - critical tools need a manager of one of the tool's teams (or a listed manager);
#  - server:update / server:delete need the owner or a manager of one of its teams;
#  - registering a high server needs membership, a critical one management, of one
#    of the teams it is registered with.
package sark.team_access

import data.sark.common

applies if "team_access" in object.get(data.sark_config.action_policies, common.action, [])

exempt if common.is_admin

open_resource if {
	common.public_resource
	common.level == "low"
}

member if common.is_team_member

member if common.is_owner

member if common.is_team_manager

use_actions := {"tool:invoke", "tool:deploy", "server:read"}

modify_actions := {"server:update", "server:delete"}

deny contains sprintf("team_access: user is not a member of any team of %s", [common.resource_name]) if {
	applies
	not exempt
	common.action in use_actions
	count(common.resource_teams) > 0
	not open_resource
	not member
}

deny contains sprintf("team_access: %s resources must belong to a team", [common.level]) if {
	applies
	not exempt
	common.high_or_critical
	count(common.resource_teams) == 0
	common.action != "server:register"
}

deny contains sprintf("team_access: critical tools require a manager of one of the tool's teams (%s)", [common.resource_name]) if {
	applies
	not exempt
	common.action in {"tool:invoke", "tool:deploy"}
	common.level == "critical"
	not common.is_team_manager
}

deny contains sprintf("team_access: %s requires the owner or a manager of one of the server's teams", [common.action]) if {
	applies
	not exempt
	common.action in modify_actions
	not common.is_owner
	not common.is_team_manager
}

deny contains "team_access: high and critical servers must be registered with at least one team" if {
	applies
	common.action == "server:register"
	common.high_or_critical
	count(common.resource_teams) == 0
}

deny contains "team_access: registering a high server requires membership in one of its teams" if {
	applies
	not exempt
	common.action == "server:register"
	common.level == "high"
	count(common.resource_teams) > 0
	not common.is_team_member
	not common.is_team_manager
}

deny contains "team_access: registering a critical server requires managing one of its teams" if {
	applies
	not exempt
	common.action == "server:register"
	common.level == "critical"
	count(common.resource_teams) > 0
	not common.is_team_manager
}

default allow := false

allow if {
	applies
	count(deny) == 0
}
