-- get.lua - GET one path over and over; a response counts as ok when its
-- status is the expected one (200 unless given).
--   wrk ... -s bench/get.lua http://host:port -- /path [status] [body-substring]
local common = dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "common.lua")
setup, done = common.setup, common.done

ok_count, error_count = 0, 0
local want_status, want_body = 200, nil
local req

function init(args)
	want_status = tonumber(args[2] or "200")
	want_body = args[3]
	req = wrk.format("GET", args[1])
end

function request()
	return req
end

function response(status, headers, body)
	if status == want_status and (not want_body or body:find(want_body, 1, true)) then
		ok_count = ok_count + 1
	else
		error_count = error_count + 1
	end
end
