# SARK's legacy OPA paths: /v1/data/mcp/allow and /v1/data/mcp/result.
package mcp

default allow := false

allow if data.sark.decision.allow == true

result := {
	"allow": allow,
	"audit_reason": concat("; ", data.sark.decision.reasons),
	"filtered_parameters": data.sark.decision.filtered_parameters,
}
