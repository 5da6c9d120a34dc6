-- 90 % GET one (random seeded) order, 10 % create.
local common = dofile(os.getenv("LOAD_DIR") .. "/common.lua")
local ids
local create

setup = common.setup
response = common.response
done = common.done

function init(args)
  common.init()
  ids = common.load_ids()
  create = wrk.format("POST", "/api/v1/orders",
    common.headers({ ["Content-Type"] = "application/json" }), common.create_body)
end

function request()
  if math.random(10) == 1 then
    return create
  end
  return wrk.format("GET", "/api/v1/orders/" .. ids[math.random(#ids)])
end
