# SARK's legacy agent-to-agent path: /v1/data/mcp/gateway/a2a/result.
# For a2a:* actions the decision's allow, reasons and restrictions; for anything else a
# deny (this path only authorizes agent-to-agent requests).
package mcp.gateway.a2a

import data.sark.common

result := {
	"allow": data.sark.decision.allow,
	"reason": concat("; ", data.sark.decision.reasons),
	"reasons": data.sark.decision.reasons,
	"restrictions": data.sark.decision.restrictions,
} if common.is_a2a

else := {
	"allow": false,
	"reason": "a2a: not an agent-to-agent action",
	"reasons": ["a2a: not an agent-to-agent action"],
	"restrictions": data.sark.decision.restrictions,
}
