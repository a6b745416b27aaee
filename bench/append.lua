-- append.lua - POST /streams/{s}/events, one event per request, each with the
-- exact expected version of its stream.
--   wrk ... -s bench/append.lua http://host:port -- <run-id> <event-data-json>
--
-- A stream never has two requests in flight, so no request ever conflicts:
-- a connection takes a stream from the thread's free list, tags the request
-- with X-Request-Id, and the response (found by its echoed X-Request-Id)
-- puts the stream back with its new version.  While every stream is busy a
-- connection starts a new one (expected version 0), so each thread ends up
-- with about one stream per connection.  A response counts as ok when it is
-- 201 with the version that was asked for; anything else is an error, and a
-- conflict answer re-synchronises the stream from its current_version.
local common = dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "common.lua")
setup, done = common.setup, common.done

ok_count, error_count = 0, 0
local run_id, data = "run", "{}"
local free, inflight = {}, {}
local nstreams, seq = 0, 0
local headers = { ["Content-Type"] = "application/json" }

function init(args)
	run_id = args[1] or run_id
	data = args[2] or data
end

local function new_stream()
	nstreams = nstreams + 1
	return { name = string.format("bench-%s-t%d-%d", run_id, thread_no or 0, nstreams), version = 0 }
end

function request()
	local s = table.remove(free) or new_stream()
	seq = seq + 1
	local rid = string.format("a%s.%d.%d", run_id, thread_no or 0, seq)
	inflight[rid] = s
	headers["X-Request-Id"] = rid
	local body = '{"expected_version":' .. s.version ..
		',"events":[{"type":"ItemReserved","data":' .. data .. '}]}'
	return wrk.format("POST", "/streams/" .. s.name .. "/events", headers, body)
end

function response(status, hdrs, body)
	local rid = common.header(hdrs, "X-Request-Id")
	local s = rid and inflight[rid]
	if s then inflight[rid] = nil end
	if status == 201 then
		local last = tonumber(body:match('"last_version":(%d+)'))
		if s and last == s.version + 1 then
			ok_count = ok_count + 1
			s.version = last
			free[#free + 1] = s
			return
		end
	end
	error_count = error_count + 1
	if s then
		local cur = tonumber(body:match('"current_version":(%d+)') or body:match('"last_version":(%d+)'))
		if cur then
			s.version = cur
			free[#free + 1] = s
		end -- else the stream is dropped; a new one replaces it
	end
end
