-- wrk script for the memory part of loadtest/bench/worker.sh: activate N
-- distinct session entities on one worker, straight (x-roost-key), each with
-- one PUT /v1/session {"theme":"dark","n":<i>}.
--
--   wrk -t1 ... -s sessions.lua http://127.0.0.1:PORT -- PREFIX N
--
-- Entity i is session PREFIX-s<i>, i = 1..N, each PUT once. After the N-th,
-- request() sends GET /healthz (no entity) until worker.sh, which watches
-- roost_worker_active_entities, stops wrk with SIGINT. Run it with one
-- thread: the counter is per thread.

local prefix
local n
local idle

-- Globals, so done() can read them from the thread: PUTs issued, statuses.
issued = 0

status_counts = {}

function init(args)
  prefix = args[1]
  n = tonumber(args[2] or "")
  assert(prefix and prefix ~= "" and n and n >= 1, "usage: -- PREFIX N")
  idle = wrk.format("GET", "/healthz")
end

-- wrk calls request() once before the run to check the request parses, and
-- never sends that one: the first call gets the idle request, so no entity
-- is skipped (and a wrk that does not check sends one GET /healthz more).
local checked = false

function request()
  if not checked then
    checked = true
    return idle
  end
  if issued >= n then
    return idle
  end
  issued = issued + 1
  local i = issued
  local key = string.format("%s-s%07d", prefix, i)
  return wrk.format("PUT", "/v1/session",
    { ["x-roost-key"] = key, ["content-type"] = "application/json" },
    string.format('{"theme":"dark","n":%d}', i))
end

function response(status, headers, body)
  status_counts[status] = (status_counts[status] or 0) + 1
end

local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
end

function done(summary, latency, requests)
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("status_counts") or {}) do
      io.write(string.format("roost-bench status %d %d\n", status, count))
    end
    io.write(string.format("roost-bench issued %d\n", thread:get("issued") or 0))
  end
end
