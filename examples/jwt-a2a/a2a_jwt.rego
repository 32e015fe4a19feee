# Agent-to-agent calls carrying a signed agent token (a JWT from SARK's identity
# provider): the token must verify against the JWKS in data.sark_jwt.jwks, come from
# the IdP for this PDP, belong to the calling agent and grant the capability asked
# (`a2a:<capability>`). The keys live in data, so a bundle or data write rotates them.
#
# Runs on regorus through the PDP's io.jwt.* extensions (pdp::builtins) and on OPA alike;
# `sark-pdp test --bundle examples/jwt-a2a` runs its cases, `pdp-bench engines --bundle
# examples/jwt-a2a` sets the engines side by side on them.
package sark

import rego.v1

verified := io.jwt.decode_verify(input.agent.token, {
	"cert": data.sark_jwt.jwks,
	"iss": "sark-idp",
	"aud": "sark-pdp",
})

claims := verified[2] if verified[0]

capability := trim_prefix(input.action, "a2a:")

decision := {
	"allow": true,
	"reasons": [sprintf("a2a: the token of %s grants %s", [claims.sub, capability])],
	"cache_ttl_s": 300,
} if {
	claims.sub == input.agent.id
	capability in claims.caps
} else := {
	"allow": false,
	"reasons": [sprintf("a2a: the token does not grant %s to %s", [capability, input.agent.id])],
	"cache_ttl_s": 300,
} if {
	claims.sub
} else := {
	"allow": false,
	"reasons": ["a2a: no verified agent token"],
	"cache_ttl_s": 60,
}
