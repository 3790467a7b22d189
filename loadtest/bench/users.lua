-- wrk script for loadtest/bench/proxy.sh: every request carries an
-- `x-user-id` header, cycling through N distinct user ids (default 10,000),
-- so a sticky proxy hashes a different key on each request and spreads the
-- load over all of its workers.
--
--   wrk ... -s users.lua URL -- [proxied|direct] [USERS] [PATH]
--
-- PATH (default /v1/whoami) is requested with GET on every request.
--
-- "direct" (a worker without a proxy in front) also sends `x-roost-key`, the
-- header a proxy forwards, so the worker does the same work and sends the
-- same response body as behind any of the proxies.
--
-- The requests are formatted once in init(); request() only picks the next
-- one, so wrk spends as little CPU per request as it can.

local requests = {}
local count = 0
local next_index = 1

function init(args)
  local direct = args[1] == "direct"
  count = tonumber(args[2] or "") or 10000
  local path = args[3] or "/v1/whoami"
  for i = 1, count do
    local id = string.format("user-%05d", i)
    local headers = { ["x-user-id"] = id }
    if direct then
      headers["x-roost-key"] = id
    end
    requests[i] = wrk.format("GET", path, headers)
  end
  next_index = 1
end

function request()
  local r = requests[next_index]
  next_index = next_index % count + 1
  return r
end
