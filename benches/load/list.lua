-- List the first page, newest first: GET /api/v1/orders?limit=20.
local common = dofile(os.getenv("LOAD_DIR") .. "/common.lua")

setup = common.setup
init = common.init
response = common.response
done = common.done

wrk.method = "GET"
wrk.path = "/api/v1/orders?limit=20"
