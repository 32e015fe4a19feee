# IP filtering on context.client_ip (IPv4 or IPv6):
#   - blocklist entries (exact, CIDR or "*") deny;
#   - the allowlist for the resource's level (exact, CIDR or "*") must match;
#   - a VPN (context.vpn == true) is required for critical resources and for high
#     resources with an invoke/delete action;
#   - for public (non-private) addresses, context.geo_country, when given, must be in
#     the country allowlist.
# A missing or malformed client_ip denies (fail closed).
package sark.ip_filtering

# data.sark.common is referenced by full path, never through `import`: regorus 0.14
# evaluates a whole imported package on every access through the alias (REGORUS-GAPS.md).

cfg := data.sark_config.ip_filtering

applies if "ip_filtering" in object.get(data.sark_config.action_policies, data.sark.common.action, [])

ip := data.sark.common.client_ip

allowlist := object.get(cfg.allowlist, data.sark.common.level, [])

deny contains "ip_filtering: context.client_ip is missing or not an IP address" if {
	applies
	not data.sark.common.client_ip
}

deny contains sprintf("ip_filtering: client IP %s is blocklisted", [ip]) if {
	applies
	ip
	data.sark.common.client_in_list(cfg.blocklist)
}

deny contains sprintf("ip_filtering: client IP %s is not allowlisted for %s resources", [ip, data.sark.common.level]) if {
	applies
	ip
	not data.sark.common.client_in_list(allowlist)
}

vpn_required if data.sark.common.level in cfg.vpn_required_levels

vpn_required if {
	data.sark.common.level == "high"
	data.sark.common.action in cfg.vpn_required_high_actions
}

deny contains sprintf("ip_filtering: VPN required for %s %s", [data.sark.common.level, data.sark.common.action]) if {
	applies
	vpn_required
	not data.sark.common.vpn
}

country := upper(data.sark.common.ctx.geo_country) if is_string(data.sark.common.ctx.geo_country)

deny contains sprintf("ip_filtering: country %s is not allowed", [country]) if {
	applies
	ip
	not data.sark.common.private_ip
	c := country
	not c in cfg.allowed_countries
}

default allow := false

allow if {
	applies
	count(deny) == 0
}
