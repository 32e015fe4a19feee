# IP filtering on context.client_ip (IPv4 or IPv6):
#   - blocklist entries (exact, CIDR or "*") deny;
#   - the allowlist for the resource's level (exact, CIDR or "*") must match;
#   - a VPN (context.vpn == true) is required for critical resources and for high
#     resources with an invoke/delete action;
#   - for public (non-private) addresses, context.geo_country, when given, must be in
#     the country allowlist.
# A missing or malformed client_ip denies (fail closed).
package sark.ip_filtering

import data.sark.common

cfg := data.sark_config.ip_filtering

applies if "ip_filtering" in object.get(data.sark_config.action_policies, common.action, [])

ip := common.client_ip

allowlist := object.get(cfg.allowlist, common.level, [])

deny contains "ip_filtering: context.client_ip is missing or not an IP address" if {
	applies
	not common.client_ip
}

deny contains sprintf("ip_filtering: client IP %s is blocklisted", [ip]) if {
	applies
	ip
	common.ip_in_list(cfg.blocklist, ip)
}

deny contains sprintf("ip_filtering: client IP %s is not allowlisted for %s resources", [ip, common.level]) if {
	applies
	ip
	not common.ip_in_list(allowlist, ip)
}

vpn_required if common.level in cfg.vpn_required_levels

vpn_required if {
	common.level == "high"
	common.action in cfg.vpn_required_high_actions
}

deny contains sprintf("ip_filtering: VPN required for %s %s", [common.level, common.action]) if {
	applies
	vpn_required
	not common.vpn
}

country := upper(common.ctx.geo_country) if is_string(common.ctx.geo_country)

deny contains sprintf("ip_filtering: country %s is not allowed", [country]) if {
	applies
	ip
	not common.private_ip
	c := country
	not c in cfg.allowed_countries
}

default allow := false

allow if {
	applies
	count(deny) == 0
}
