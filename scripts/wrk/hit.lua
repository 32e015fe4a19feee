-- wrk: POST SARK's typical question to /v1/data/mcp/allow; the same input every time, so
-- every answer after the first is a cache hit. PIPELINE (env) requests per write.
local input = [[{"input": {"user": {"id": "alice", "roles": ["developer"], "teams": ["payments"], "mfa_verified": true, "mfa_age_s": 120},
 "action": "tool:invoke", "tool": {"name": "update_ticket", "sensitivity_level": "medium", "teams": ["payments"]},
 "parameters": {"ticket_id": "T-42", "api_token": "x"},
 "context": {"client_ip": "10.20.30.40", "audit_enabled": true, "vpn": true, "geo_country": "US"}}}]]
local headers = {["Content-Type"] = "application/json"}
local depth = tonumber(os.getenv("PIPELINE") or "1")
local batch

init = function(args)
  local r = {}
  for i = 1, depth do
    r[i] = wrk.format("POST", "/v1/data/mcp/allow", headers, input)
  end
  batch = table.concat(r)
end

request = function()
  return batch
end
