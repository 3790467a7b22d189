-- wrk script for loadtest/bench/worker.sh: USERS users with two devices
-- each, adding and removing cart items (or, for the ceilings, the same
-- requests to /v1/whoami, which touches no state).
--
--   wrk -t1 ... -s cart.lua PROXY_URL -- proxied LINE USERS PREFIX [SKUS]
--   ROOST_WORKER_PORTS=P1,P2,P3 wrk -t3 ... -s cart.lua http://127.0.0.1:P1 -- direct LINE USERS PREFIX [SKUS]
--
-- LINE:
--   write-behind, durable  POST /v1/cart/items {"sku", "qty": 1} and
--                          DELETE /v1/cart/items/{sku}, with that
--                          roost-durability header
--   write-behind-before,   the same as write-behind, durable (worker.sh
--   durable-before         sends them to workers of another build)
--   write-behind-generic   the same changes through the generic scheme:
--                          POST /v1/cart/add {"sku", "qty": 1} and
--                          POST /v1/cart/remove {"sku"}, write-behind
--   stateless              the same requests as durable (the --stateless
--                          worker commits before it answers anyway)
--   ceiling                the write-behind requests (same methods, headers
--                          and bodies) sent to /v1/whoami, which reads the
--                          body and touches no state: the same load minus
--                          the state
--   ceiling-get            GET /v1/whoami, no body (the proxy benchmark's
--                          request)
--   bare-hyper             the write-behind requests, as they are (worker.sh
--                          sends them to roost-fixed-reply servers: what
--                          the same requests cost a bare hyper server)
--   activate               not a measurement: one GET /v1/cart per user
--                          (claims the entity, or creates its row for the
--                          stateless worker), then GET /v1/whoami until
--                          stopped; when every user's GET has been answered
--                          200, thread k creates the file
--                          $ROOST_ACTIVATE_MARKER<k>
--
-- User i's id is PREFIX-u<i>, sent as x-user-id; "direct" also sends it as
-- x-roost-key, the header the proxy forwards. A device is a second
-- connection sending the same id: each user's two devices are adjacent in
-- the request sequence, and wrk hands consecutive requests to different
-- connections (a connection has one request in flight), so a user's two
-- devices use two connections, concurrently.
--
-- Each device owns SKUS SKUs (default 3; device a: a1..a3, device b:
-- b1..b3) and cycles: add a1, add a2, add a3, remove a1, remove a2,
-- remove a3. All devices do step k before any does step k+1, so a device's
-- remove comes a whole round of 2 x USERS requests after its add: a cart
-- holds at most 2 x SKUS lines, and a 404 not_in_cart is rare (it can follow
-- an earlier failed add, or a run that started mid-cycle).
--
-- Direct: wrk's setup() points thread k at the k-th port of
-- ROOST_WORKER_PORTS, and thread k sends only the users i with
-- (i - 1) mod THREADS = k - 1 (THREADS = number of ports): one wrk thread
-- per worker, each with its own third of the users, all in one process so
-- wrk merges their latency histograms exactly.
--
-- Requests are formatted once in init(); request() only steps a cursor.
-- (Should a wrk version not make its check call, user 1's first add goes
-- out twice: qty 2, and the remove still removes the line.)
-- response() counts statuses (and 404 not_in_cart) per thread; done()
-- prints them with a few extra percentiles as "roost-bench ..." lines.

local threads = {}

function setup(thread)
  local n = #threads + 1
  threads[n] = thread
  thread:set("thread_number", n)
  local ports = {}
  for port in string.gmatch(os.getenv("ROOST_WORKER_PORTS") or "", "%d+") do
    ports[#ports + 1] = port
  end
  if #ports > 0 then
    thread:set("thread_count", #ports)
    thread.addr = wrk.lookup("127.0.0.1", ports[(n - 1) % #ports + 1])[1]
  else
    thread:set("thread_count", 1)
  end
end

local requests = {}
local total = 0
local cursor = 1
-- wrk calls request() once on thread 1 before the run to check the request
-- parses, and never sends that one: thread 1 answers that call with a copy
-- of its first request without stepping the cursor, so no step is lost.
local check_pending = false

status_counts = {}
not_in_cart = 0
local activating = false
local activate_expected = 0
local activated = 0
local activate_marker = nil
local idle = nil

local function device_requests(line, headers, device, skus)
  local list = {}
  if line == "ceiling-get" then
    list[1] = wrk.format("GET", "/v1/whoami", headers)
    return list
  end
  local add_path, remove_prefix = "/v1/cart/items", "/v1/cart/items/"
  if line == "ceiling" then
    add_path, remove_prefix = "/v1/whoami", "/v1/whoami?sku="
  end
  local post_headers = {}
  for k, v in pairs(headers) do
    post_headers[k] = v
  end
  post_headers["content-type"] = "application/json"
  for s = 1, skus do
    local body = string.format('{"sku":"%s%d","qty":1}', device, s)
    list[#list + 1] = wrk.format("POST", add_path, post_headers, body)
  end
  if line == "write-behind-generic" then
    list = {}
    for s = 1, skus do
      local body = string.format('{"sku":"%s%d","qty":1}', device, s)
      list[#list + 1] = wrk.format("POST", "/v1/cart/add", post_headers, body)
    end
    for s = 1, skus do
      local body = string.format('{"sku":"%s%d"}', device, s)
      list[#list + 1] = wrk.format("POST", "/v1/cart/remove", post_headers, body)
    end
    return list
  end
  for s = 1, skus do
    list[#list + 1] = wrk.format("DELETE", string.format("%s%s%d", remove_prefix, device, s), headers)
  end
  return list
end

-- User i's headers: its id, and for "direct" also the key the proxy would set.
local function user_headers(prefix, i, mode)
  local id = string.format("%s-u%05d", prefix, i)
  local headers = { ["x-user-id"] = id }
  if mode == "direct" then
    headers["x-roost-key"] = id
  end
  return headers
end

function init(args)
  local mode = args[1]
  local line = args[2]
  local users = tonumber(args[3] or "")
  local prefix = args[4]
  local skus = tonumber(args[5] or "") or 3
  assert(mode == "proxied" or mode == "direct", "mode must be proxied or direct")
  assert(line == "write-behind" or line == "durable" or line == "stateless" or line == "ceiling"
    or line == "ceiling-get" or line == "activate" or line == "write-behind-generic"
    or line == "write-behind-before" or line == "durable-before" or line == "bare-hyper",
    "line must be write-behind, durable, stateless, ceiling, ceiling-get, write-behind-generic, write-behind-before, durable-before, bare-hyper or activate")
  assert(users and users >= 1, "USERS must be a positive number")
  assert(prefix and prefix ~= "", "PREFIX is required")
  local part = (thread_number or 1) - 1
  local parts = thread_count or 1

  if line == "activate" then
    activating = true
    local marker = os.getenv("ROOST_ACTIVATE_MARKER")
    if marker and marker ~= "" then
      activate_marker = marker .. (thread_number or 1)
    end
    total = 0
    for i = 1, users do
      if (i - 1) % parts == part then
        local headers = user_headers(prefix, i, mode)
        total = total + 1
        requests[total] = wrk.format("GET", "/v1/cart", headers)
        if not idle then
          idle = wrk.format("GET", "/v1/whoami", headers)
        end
      end
    end
    activate_expected = total
    cursor = 1
    check_pending = (part == 0)
    return
  end

  -- per_device[d] = the device's request cycle; devices 2u-1 and 2u are user u's.
  local per_device = {}
  for i = 1, users do
    if (i - 1) % parts == part then
      local headers = user_headers(prefix, i, mode)
      if line ~= "ceiling-get" then
        local write_behind = line == "write-behind" or line == "ceiling"
          or line == "write-behind-generic" or line == "write-behind-before"
          or line == "bare-hyper"
        headers["roost-durability"] = write_behind and "write-behind" or "durable"
      end
      per_device[#per_device + 1] = device_requests(line, headers, "a", skus)
      per_device[#per_device + 1] = device_requests(line, headers, "b", skus)
    end
  end
  -- Step-major order: step 1 of every device, then step 2, ...
  local steps = #per_device[1]
  total = 0
  for step = 1, steps do
    for d = 1, #per_device do
      total = total + 1
      requests[total] = per_device[d][step]
    end
  end
  cursor = 1
  check_pending = (part == 0)
end

function request()
  if check_pending then
    check_pending = false
    return requests[1]
  end
  if activating and cursor > total then
    return idle
  end
  local r = requests[cursor]
  cursor = cursor + 1
  if cursor > total and not activating then
    cursor = 1
  end
  return r
end

function response(status, headers, body)
  status_counts[status] = (status_counts[status] or 0) + 1
  if activating and status == 200 and string.sub(body, 1, 9) == '{"items":' then
    activated = activated + 1
    if activated == activate_expected and activate_marker then
      local f = io.open(activate_marker, "w")
      if f then
        f:close()
      end
    end
  end
  if status == 404 and string.find(body, "not_in_cart", 1, true) then
    not_in_cart = not_in_cart + 1
  end
end

function done(summary, latency, requests)
  local counts, missing = {}, 0
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("status_counts") or {}) do
      counts[status] = (counts[status] or 0) + n
    end
    missing = missing + (thread:get("not_in_cart") or 0)
  end
  local statuses = {}
  for status in pairs(counts) do
    statuses[#statuses + 1] = status
  end
  table.sort(statuses)
  for _, status in ipairs(statuses) do
    io.write(string.format("roost-bench status %d %d\n", status, counts[status]))
  end
  io.write(string.format("roost-bench not_in_cart %d\n", missing))
  io.write(string.format("roost-bench latency_us p50 %d p90 %d p99 %d p99.9 %d max %d\n",
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
  local e = summary.errors
  io.write(string.format("roost-bench socket_errors connect %d read %d write %d timeout %d\n",
    e.connect, e.read, e.write, e.timeout))
end
