-- GCRA over several buckets at once, all or nothing (orders-api rate limits in Redis).
--
-- KEYS[i]     bucket i; its value is the bucket's theoretical arrival time (TAT), in
--             microseconds on Redis's clock.
-- ARGV[1]     now in microseconds, or "" to read Redis's clock (TIME). Only tests pass a
--             value, to run the arithmetic on a clock they control.
-- ARGV[2i]    bucket i's emission interval, in microseconds (at least 1).
-- ARGV[2i+1]  bucket i's capacity (burst x interval), in microseconds.
--
-- The request is admitted only if every bucket admits it; then every TAT moves one interval
-- later and each key expires when its bucket has refilled completely (a missing key is a full
-- bucket). A refusal writes nothing.
--
-- Returns {refused, wait, ahead_1, ..., ahead_n}: refused is 0 when admitted, else the index
-- of the first bucket that refused and wait its microseconds until a request could pass;
-- ahead_i is how far bucket i's TAT is ahead of now (after the request, when admitted).
-- Numbers stay below 2^53, where Lua's doubles are exact.
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

local n = #KEYS
local tats = {}
for i = 1, n do
  local tat = tonumber(redis.call('GET', KEYS[i])) or 0
  if tat < now then
    tat = now
  end
  tats[i] = tat
end

for i = 1, n do
  local interval = tonumber(ARGV[2 * i])
  local capacity = tonumber(ARGV[2 * i + 1])
  local ahead = tats[i] + interval - now
  if ahead > capacity then
    local out = { i, ahead - capacity }
    for j = 1, n do
      out[j + 2] = tats[j] - now
    end
    return out
  end
end

local out = { 0, 0 }
for i = 1, n do
  local tat = tats[i] + tonumber(ARGV[2 * i])
  redis.call('SET', KEYS[i], string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000))
  out[i + 2] = tat - now
end
return out
