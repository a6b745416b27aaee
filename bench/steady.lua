-- steady.lua - POST /orders/{id}/place at a steady rate, whatever the answers
-- take: the arrivals of a live shop, not a closed loop that slows down with
-- the server.
--   wrk ... -s bench/steady.lua http://host:port -- <orders-file> <rate/s> <threads>
--
-- <orders-file> holds one draft order id a line; thread k of n places the
-- ids whose line number is k modulo n, each once.  Each thread sends at
-- rate/threads a second: request i of a thread is due i * threads / rate
-- seconds after the thread's first, and wrk's delay() holds a connection
-- until then (a connection free early waits; one that is late sends at once,
-- so the arrivals catch up).  When a thread has placed all its orders it
-- ends the run.  Counts 200 answers as ok.
local common = dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "common.lua")
setup, done = common.setup, common.done

ok_count, error_count, extra_count = 0, 0, 0
local ids, next_i, interval_us, start_us, sent = {}, 1, 1000, nil, 0

function init(args)
	local file, rate, nthreads = args[1], tonumber(args[2] or "1000"), tonumber(args[3] or "1")
	local k = 0
	for line in io.lines(file) do
		if line ~= "" then
			if k % nthreads == (thread_no or 1) - 1 then ids[#ids + 1] = line end
			k = k + 1
		end
	end
	interval_us = 1e6 * nthreads / rate
end

function delay()
	local now = common.now_us()
	start_us = start_us or now
	local due = start_us + sent * interval_us
	sent = sent + 1
	local ms = (due - now) / 1000
	return ms > 0 and math.floor(ms) or 0
end

function request()
	local id = ids[next_i]
	if not id then
		common.finish()
		id = ids[#ids]
	end
	next_i = next_i + 1
	return wrk.format("POST", "/orders/" .. id .. "/place")
end

function response(status, headers, body)
	if status == 200 then ok_count = ok_count + 1 else error_count = error_count + 1 end
end
