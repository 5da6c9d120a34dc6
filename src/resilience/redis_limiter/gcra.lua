-- GCRA over several buckets at once, all or nothing, for a batch of requests (orders-api rate
-- limits in Redis). Requests are decided in order, each seeing the ones before it.
--
-- ARGV[1]   now in microseconds, or "" to read Redis's clock (TIME). Only tests pass a value,
--           to run the arithmetic on a clock they control.
-- ARGV[2]   the number of rule sets S; then, per set, its number of buckets n, then per bucket
--           its emission interval and its capacity (burst x interval), in microseconds.
-- Then      the number of requests R; then, per request, the index (1-based) of its rule set.
-- KEYS holds the requests' buckets in the same order: n keys per request, those of its set. A
-- bucket's value is its theoretical arrival time (TAT) in microseconds on Redis's clock; a
-- missing key is a full bucket.
--
-- A request is admitted only if every one of its buckets admits it; then each of its TATs
-- moves one interval later. A refusal changes nothing. Each key written expires when its
-- bucket has refilled completely.
--
-- Returns, per request: refused, wait, ahead_1 .. ahead_n. refused is 0 when admitted, else
-- the position of the first bucket that refused and wait its microseconds until a request
-- could pass; ahead_i is how far bucket i's TAT is ahead of now (after the request, when
-- admitted). Numbers stay below 2^53, where Lua's doubles are exact.
if redis.replicate_commands then
  redis.replicate_commands()
end

local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[1])
end

local sets = {}
local a = 3
for j = 1, tonumber(ARGV[2]) do
  local n = tonumber(ARGV[a])
  local set = { n = n, interval = {}, capacity = {} }
  for i = 1, n do
    set.interval[i] = tonumber(ARGV[a + 2 * i - 1])
    set.capacity[i] = tonumber(ARGV[a + 2 * i])
  end
  sets[j] = set
  a = a + 1 + 2 * n
end

local tats = {}     -- key -> TAT, read at most once
local written = {}  -- keys to write back: key -> true, and the keys in order at 1, 2, ...
local out = {}
local k = 1         -- the next request's first KEYS position
for r = 1, tonumber(ARGV[a]) do
  local set = sets[tonumber(ARGV[a + r])]
  local n, interval, capacity = set.n, set.interval, set.capacity
  for i = 0, n - 1 do
    local key = KEYS[k + i]
    if tats[key] == nil then
      tats[key] = tonumber(redis.call('GET', key)) or 0
    end
  end
  local refused, wait = 0, 0
  for i = 1, n do
    local ahead = math.max(tats[KEYS[k + i - 1]], now) + interval[i] - now
    if ahead > capacity[i] then
      refused, wait = i, ahead - capacity[i]
      break
    end
  end
  out[#out + 1] = refused
  out[#out + 1] = wait
  for i = 1, n do
    local key = KEYS[k + i - 1]
    local tat = math.max(tats[key], now)
    if refused == 0 then
      tat = tat + interval[i]
      if written[key] == nil then
        written[key] = true
        written[#written + 1] = key
      end
      tats[key] = tat
    end
    out[#out + 1] = tat - now
  end
  k = k + n
end

for _, key in ipairs(written) do
  local tat = tats[key]
  -- PX counts whole milliseconds from Redis's own millisecond clock: one more than the
  -- rounded-up wait keeps a key from expiring before its bucket is full.
  redis.call('SET', key, string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
end
return out
