-- GET one order: a random id out of the seeded ones on every request.
local common = dofile(os.getenv("LOAD_DIR") .. "/common.lua")
local ids

setup = common.setup
response = common.response
done = common.done

function init(args)
  common.init()
  ids = common.load_ids()
end

function request()
  return wrk.format("GET", "/api/v1/orders/" .. ids[math.random(#ids)])
end
