# RBAC: which role may perform which action. Roles and their permitted actions live in
# data.sark_config.rbac.role_permissions ("*" = everything, "server:*" = a family).
# The service role acts through user.scopes (each scope an action it may perform).
package sark.rbac

# data.sark.common is referenced by full path, never through `import`: regorus 0.14
# evaluates a whole imported package on every access through the alias (REGORUS-GAPS.md).

cfg := data.sark_config.rbac

applies if "rbac" in object.get(data.sark_config.action_policies, data.sark.common.action, [])

permits(perms, a) if a in perms

permits(perms, _) if "*" in perms

permits(perms, a) if {
	some p in perms
	is_string(p)
	endswith(p, ":*")
	startswith(a, trim_suffix(p, "*"))
}

# Roles granted by role_permissions (the scoped roles excluded).
permitted_by_role contains role if {
	some role in data.sark.common.roles
	not role in cfg.scoped_roles
	permits(object.get(cfg.role_permissions, role, []), data.sark.common.action)
}

permitted_by_scope if {
	some role in data.sark.common.roles
	role in cfg.scoped_roles
	permits(data.sark.common.scopes, data.sark.common.action)
}

permitted if count(permitted_by_role) > 0

permitted if permitted_by_scope

plain_roles := {r | some r in data.sark.common.roles; not r in cfg.scoped_roles}

deny contains "rbac: user has no roles" if {
	applies
	count(data.sark.common.roles) == 0
}

deny contains sprintf("rbac: role %s may not perform %s", [concat(",", sort(plain_roles)), data.sark.common.action]) if {
	applies
	not permitted
	count(plain_roles) > 0
}

deny contains sprintf("rbac: service scopes do not include %s", [data.sark.common.action]) if {
	applies
	not permitted
	some role in data.sark.common.roles
	role in cfg.scoped_roles
}

default allow := false

allow if {
	applies
	count(deny) == 0
}
