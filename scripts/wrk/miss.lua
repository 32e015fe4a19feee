-- wrk: POST SARK's typical question to /v1/data/mcp/allow for a user never seen before,
-- every time: each answer is a cache miss, decided by the evaluator.
local template = [[{"input": {"user": {"id": "USER", "roles": ["developer"], "teams": ["payments"], "mfa_verified": true, "mfa_age_s": 120},
 "action": "tool:invoke", "tool": {"name": "update_ticket", "sensitivity_level": "medium", "teams": ["payments"]},
 "parameters": {"ticket_id": "T-42", "api_token": "x"},
 "context": {"client_ip": "10.20.30.40", "audit_enabled": true, "vpn": true, "geo_country": "US"}}}]]
local headers = {["Content-Type"] = "application/json"}
local n = 0
local prefix = "wrk-" .. tostring(os.time()) .. "-" .. tostring(math.random(1, 1000000000)) .. "-"

request = function()
  n = n + 1
  local body = template:gsub("USER", prefix .. n)
  return wrk.format("POST", "/v1/data/mcp/allow", headers, body)
end
