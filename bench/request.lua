-- One request, repeated: wrk reads the method, body and headers from the environment so that
-- bench/run can drive every scenario with this one script.
wrk.method = os.getenv("WRK_METHOD") or "GET"
wrk.body = os.getenv("WRK_BODY")
local content_type = os.getenv("WRK_CONTENT_TYPE")
if content_type then
    wrk.headers["Content-Type"] = content_type
end
local authorization = os.getenv("WRK_AUTHORIZATION")
if authorization then
    wrk.headers["Authorization"] = authorization
end
