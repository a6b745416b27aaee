-- feed.lua - read the global feed from the start, GET /events?limit=N
-- following each page's "next" cursor, until <total> events have been read
-- (or the feed ends), then stop the run.  Use one thread and one connection.
--   wrk -t1 -c1 ... -s bench/feed.lua http://host:port -- <limit> <total>
-- extra = events read; span_us = time from the first request to the last
-- response, so events/s = extra / span_us.  The latency percentiles are of
-- the pages read (the script times them itself: wrk's own figures would also
-- count the few requests sent while the run stops).
local common = dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "common.lua")
setup, done = common.setup, common.done

ok_count, error_count, extra_count = 0, 0, 0
first_us, last_us = 0, 0
local limit, total = 1000, 1000000
local after = "0"
local finished = false
local sent_us, lats = 0, {}

function init(args)
	limit = tonumber(args[1] or "1000")
	total = tonumber(args[2] or "1000000")
end

function request()
	if finished then return wrk.format("GET", "/healthz") end
	sent_us = common.now_us()
	if first_us == 0 then first_us = sent_us end
	return wrk.format("GET", "/events?limit=" .. limit .. "&after=" .. after)
end

local function stop()
	finished = true
	last_us = common.now_us()
	table.sort(lats)
	if #lats > 0 then
		p50_override = lats[math.max(1, math.floor(#lats * 0.50))]
		p99_override = lats[math.max(1, math.floor(#lats * 0.99))]
	end
	common.finish()
end

local function count_events(body)
	local n, pos = 0, 1
	while true do
		local s = body:find('"event_id"', pos, true)
		if not s then return n end
		n = n + 1
		pos = s + 10
	end
end

function response(status, headers, body)
	if finished then return end
	lats[#lats + 1] = common.now_us() - sent_us
	local nxt = status == 200 and body:sub(-120):match('"next":"([%d%-]+)"')
	if not nxt then
		error_count = error_count + 1
		stop()
		return
	end
	ok_count = ok_count + 1
	local n = count_events(body)
	extra_count = extra_count + n
	after = nxt
	if n == 0 or extra_count >= total then stop() end
end
