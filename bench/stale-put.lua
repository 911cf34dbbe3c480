-- wrk script: PUT /orders/<n> with "Fencing-Token: 1" -- every write stale, for bench/stale.sh.
--
-- usage: wrk -t2 -c64 -d10s --latency -s stale-put.lua http://127.0.0.1:8082 -- [RESOURCES] [THREADS]
-- Same paths, headers and body as the peers' fence-put.lua, but the token is always 1 and the
-- resources' high-water marks are seeded far above it first, so every answer must be a 409 with
-- one audit record behind it. wrk counts the 409s as "non-2xx"; done() prints the same
-- machine-readable WRKSUM line as the peers' scripts. No response() callback, on purpose (as in
-- fence-put.lua): it would make wrk parse every answer in Lua and slow the client down.

local resources, nthreads = 10000, 2
local threads = {}
local counter = 0
local per_thread, host_hdr
local body = '{"status":"paid"}'

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  resources = tonumber(args[1]) or resources
  nthreads  = tonumber(args[2]) or nthreads
  per_thread = math.floor(resources / nthreads)
  if per_thread < 1 then per_thread = 1 end
  host_hdr = wrk.headers["Host"] or wrk.host
end

function request()
  counter = counter + 1
  local n = tid + nthreads * (counter % per_thread)
  return "PUT /orders/" .. n .. " HTTP/1.1\r\n" ..
         "Host: " .. host_hdr .. "\r\n" ..
         "Fencing-Token: 1\r\n" ..
         "Content-Type: application/json\r\n" ..
         "Content-Length: " .. #body .. "\r\n\r\n" .. body
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKSUM requests=%d duration_us=%d rps=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d " ..
    "non2xx=%d connect_err=%d read_err=%d write_err=%d timeout=%d\n",
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.status, e.connect, e.read, e.write, e.timeout))
end
