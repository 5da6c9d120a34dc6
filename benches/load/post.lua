-- Create an order: POST /api/v1/orders with a two-item JSON body.
local common = dofile(os.getenv("LOAD_DIR") .. "/common.lua")

setup = common.setup
init = common.init
response = common.response
done = common.done

wrk.method = "POST"
wrk.path = "/api/v1/orders"
wrk.body = common.create_body
wrk.headers["Content-Type"] = "application/json"
