-- wrk script: GET or PUT /api/cache/{key} over random keys, the key space
-- redis-benchmark -r uses (key:000000000000 ... key:<keyspace-1>, 12 digits).
-- Arguments after `--`: <GET|PUT> <keyspace> <value bytes>.
-- Prints one `BENCH {json}` line with the totals and latency percentiles.

local method, keyspace, body
local threads = 0

function setup(thread)
  thread:set("id", threads)
  threads = threads + 1
end

function init(args)
  method = args[1] or "GET"
  keyspace = tonumber(args[2] or "10000")
  body = string.rep("x", tonumber(args[3] or "100"))
  math.randomseed(7919 * (id + 1))
end

local put_headers = { ["Content-Type"] = "text/plain; charset=utf-8" }

function request()
  local path = string.format("/api/cache/key:%012d", math.random(0, keyspace - 1))
  if method == "PUT" then
    return wrk.format("PUT", path, put_headers, body)
  end
  return wrk.format("GET", path)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,' ..
    '"status_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
