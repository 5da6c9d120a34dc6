-- Shared by the wrk scenario scripts: order ids to read, the create body, and the report.
--
-- Every script counts responses that are not 2xx in a response() hook and prints one
-- machine-readable RESULT line from done(); run.sh parses it.

local common = {}

-- Every request carries the run's API key (LOAD_KEY, set by run.sh); an instance with
-- authentication off ignores it.
local key = os.getenv("LOAD_KEY")
if key and #key > 0 then
  wrk.headers["Authorization"] = "Bearer " .. key
end

-- The headers of every request plus `extra`. wrk.format(method, path, headers, body) sends
-- the table it is given instead of wrk.headers, so a script that formats its own requests
-- with headers must start from these (or it drops the API key).
function common.headers(extra)
  local h = {}
  for k, v in pairs(wrk.headers) do h[k] = v end
  for k, v in pairs(extra or {}) do h[k] = v end
  return h
end

common.create_body = '{"customer_id":"load-1","currency":"EUR",'
  .. '"items":[{"sku":"BOOK-1","quantity":2,"unit_price":"9.99"},'
  .. '{"sku":"PEN-7","quantity":1,"unit_price":"1.50"}]}'

-- The ids written by run.sh after seeding (one per line), path in LOAD_IDS.
function common.load_ids()
  local ids = {}
  local path = os.getenv("LOAD_IDS")
  if path then
    for line in io.lines(path) do
      if #line > 0 then ids[#ids + 1] = line end
    end
  end
  assert(#ids > 0, "LOAD_IDS names no ids")
  return ids
end

local threads = {}

function common.setup(thread)
  threads[#threads + 1] = thread
end

function common.init()
  non2xx = 0
  math.randomseed(os.time() + math.floor(os.clock() * 1e6))
end

function common.response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
end

function common.done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do
    bad = bad + (t:get("non2xx") or 0)
  end
  local e = summary.errors
  local socket = e.connect + e.read + e.write + e.timeout
  io.write(string.format(
    "RESULT requests=%d duration_us=%d rps=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d non2xx=%d socket_errors=%d\n",
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    bad, socket))
end

return common
