# SARK's legacy agent-to-agent path: /v1/data/mcp/gateway/a2a/result.
# For a2a:* actions the decision's allow, reasons and restrictions; for anything else a
# deny (this path only authorizes agent-to-agent requests).
package mcp.gateway.a2a

# data.sark.common is referenced by full path, never through `import`: regorus 0.14
# evaluates a whole imported package on every access through the alias (REGORUS-GAPS.md).

result := {
	"allow": data.sark.decision.allow,
	"reason": concat("; ", data.sark.decision.reasons),
	"reasons": data.sark.decision.reasons,
	"restrictions": data.sark.decision.restrictions,
} if data.sark.common.is_a2a

else := {
	"allow": false,
	"reason": "a2a: not an agent-to-agent action",
	"reasons": ["a2a: not an agent-to-agent action"],
	"restrictions": data.sark.decision.restrictions,
}
