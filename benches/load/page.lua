-- A v2 cursor page, newest first: GET /api/v2/orders?limit=20 (no total is counted).
local common = dofile(os.getenv("LOAD_DIR") .. "/common.lua")

setup = common.setup
init = common.init
response = common.response
done = common.done

wrk.method = "GET"
wrk.path = "/api/v2/orders?limit=20"
