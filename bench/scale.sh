# bench/scale.sh - `bench/run --scale`: what the request paths cost as the log
# grows.  Sourced by bench/run after PostgreSQL is up (its functions and
# settings are in scope); see bench/README.md, "Cost as the log grows".
#
# For each size of BENCH_SCALE_SIZES (events, increasing; default 0, 1
# million, 10 million) the events table is bulk-loaded up to that size with
# shop orders (OrderCreated and nine OrderLineAdded of schema version 2 each,
# events the order aggregate folds), vacuumed and analysed, factd restarted,
# and five cases measured: append, command, read-stream, load (GET
# /orders/{id} of a 21-event order) and feed-page (GET /events?limit=1000 of
# the newest 1000 events, as a caught-up consumer reads).  Each size's figures
# are compared with the empty table's of the same run; the target is every
# median (p50) latency within 20% of it.  Each case runs BENCH_SCALE_ROUNDS
# times per size (default 3), the five in turn; its figures are the medians.  EXPLAIN (ANALYZE, BUFFERS) of the
# store's statements at each size goes to .local/bench/scale-explain-<size>.txt.
#
# factd runs with FACTD_PROJECTIONS=0 and FACTD_SAGAS=0: the background
# consumers would otherwise spend the measured minutes replaying the bulk
# load (bench/projections measures that).

SCALE_SIZES=${BENCH_SCALE_SIZES:-"0 1000000 10000000"}
prev=-1
for s in $SCALE_SIZES; do
	[[ $s =~ ^[0-9]+$ ]] && ((s % 10 == 0 && s > prev)) ||
		die "BENCH_SCALE_SIZES must be increasing multiples of 10, got '$SCALE_SIZES'"
	prev=$s
done
[[ " $SCALE_SIZES " == " 0 "* ]] || die "BENCH_SCALE_SIZES must start with 0 (the baseline), got '$SCALE_SIZES'"
scale_cases="append command read-stream load feed-page"
SCALE_CHUNK=${BENCH_SCALE_CHUNK:-50000} # orders (10 events each) per bulk-load transaction
SCALE_JOBS=$(int_setting BENCH_SCALE_JOBS 2 1) # bulk-load transactions at once
SCALE_ROUNDS=$(int_setting BENCH_SCALE_ROUNDS 3 1) # measured runs of each case per size; figures are their medians

export FACTD_PROJECTIONS=0 FACTD_SAGAS=0

# Before each run only a checkpoint: VACUUM ANALYZE runs once per size, after
# its bulk load and again after its fixtures are written; the few thousand
# rows a run appends leave autovacuum little to do.
pg_settle() { psql_q postgres -c "CHECKPOINT"; }

# Event ids are version-7 UUIDs, as factd makes them (docs/design.md, "Event
# ids"): the millisecond of order g is scale_ms0 + g, 30 days ago and on, so
# they sort in writing order and come before every id factd makes now.
scale_ms0=$(($(date +%s) * 1000 - 30 * 86400 * 1000))

# Bulk-load orders [first, first + n): streams rows and their ten events, in
# transactions of SCALE_CHUNK orders, each ordered by stream and version so
# that seq follows versions as fd_append's would.
bulk_chunk() { # a b: orders [a, b) in one transaction
	psql_q factd -v a="$1" -v b="$2" -v ms0="$scale_ms0" <<'EOF'
BEGIN;
INSERT INTO streams (stream_id, category, version)
SELECT 'order-' || md5('factd-scale-' || g)::uuid, 'order', 10
  FROM generate_series(:a, :b - 1) g;
INSERT INTO events (event_id, stream_id, category, version, type, data, metadata)
SELECT (lpad(to_hex(:ms0 + g), 12, '0') || '7' || substr(h, 1, 3) || substr('89ab', 1 + g % 4, 1)
        || substr(h, 4, 15))::uuid,
       'order-' || md5('factd-scale-' || g)::uuid, 'order', v,
       CASE WHEN v = 1 THEN 'OrderCreated' ELSE 'OrderLineAdded' END,
       CASE WHEN v = 1 THEN jsonb_build_object('customer_id', 'c-scale-' || (g % 100000))
            ELSE jsonb_build_object('product_id', 'sku-' || ((g * 7 + v) % 5000) || '-' || v,
                                    'quantity', 1 + (g + v) % 5,
                                    'unit_price', jsonb_build_object('amount_cents', 100 + (g * 13 + v) % 9900,
                                                                     'currency', 'EUR')) END,
       CASE WHEN v = 1 THEN jsonb_build_object('request_id', 'scale-' || g)
            ELSE jsonb_build_object('request_id', 'scale-' || g, 'schema_version', 2) END
  FROM generate_series(:a, :b - 1) g CROSS JOIN generate_series(1, 10) v
       CROSS JOIN LATERAL (SELECT md5('factd-scale-event-' || g || '-' || v) AS h) r
 ORDER BY g, v;
COMMIT;
EOF
}
# BENCH_SCALE_JOBS transactions at once (default 2).
bulk_load() { # first n
	local first=$1 n=$2 a b pids=()
	for ((a = first; a < first + n; a += SCALE_CHUNK)); do
		b=$((a + SCALE_CHUNK < first + n ? a + SCALE_CHUNK : first + n))
		bulk_chunk "$a" "$b" &
		pids+=($!)
		if ((${#pids[@]} >= SCALE_JOBS)); then
			wait "${pids[0]}" || die "bulk load failed"
			pids=("${pids[@]:1}")
		fi
	done
	for a in "${pids[@]}"; do wait "$a" || die "bulk load failed"; done
}

# The cursor of the newest event (the feed's position format).
newest_position() { psql_q factd -c "SELECT coalesce((SELECT tx_id::text || '-' || seq FROM events ORDER BY tx_id DESC, seq DESC LIMIT 1), '0')"; }

# EXPLAIN (ANALYZE, BUFFERS) of the statements behind the cases, with the
# parameters they have in the measured runs.
explain_all() { # size stream order cursor
	local size=$1 stream=$2 order=$3 cursor=$4 out="$work/scale-explain-$1.txt"
	local tx=${cursor%-*} seq=${cursor#*-}
	{
		echo "== size $size: $(psql_q factd -c "SELECT count(*) FROM events") events, $(psql_q factd -c "SELECT pg_size_pretty(pg_total_relation_size('events'))") (events with its indexes)"
		psql "$(pgurl factd)" -X -v ON_ERROR_STOP=1 <<EOF
SET plan_cache_mode = force_generic_plan;
\echo == read-stream: the events of a stream by version
EXPLAIN (ANALYZE, BUFFERS) SELECT e.event_id, e.stream_id, e.version, e.type, e.data, e.metadata, e.recorded_at, e.tx_id, e.seq
  FROM events e WHERE e.stream_id = '$stream' AND e.version > 0 ORDER BY e.version LIMIT 100;
\echo == load: the events of an order after version 0
EXPLAIN (ANALYZE, BUFFERS) SELECT e.version, e.type, e.data, e.metadata FROM events e
 WHERE e.stream_id = 'order-$order' AND e.version > 0 ORDER BY e.version;
\echo == feed-page: 1000 events past the cursor, below the horizon
EXPLAIN (ANALYZE, BUFFERS) SELECT e.event_id, e.stream_id, e.version, e.type, e.data, e.metadata, e.recorded_at, e.tx_id, e.seq
  FROM events e WHERE (e.tx_id, e.seq) > ('$tx'::xid8, $seq::bigint) AND e.tx_id < pg_snapshot_xmin(pg_current_snapshot())
 ORDER BY e.tx_id, e.seq LIMIT 1000;
\echo == feed-head: the newest visible event
EXPLAIN (ANALYZE, BUFFERS) SELECT t.tx_id, t.seq FROM events t WHERE t.tx_id < pg_snapshot_xmin(pg_current_snapshot())
 ORDER BY t.tx_id DESC, t.seq DESC LIMIT 1;
\echo == append-ids: the client id check of an append (a constant id: a volatile function would not be an index key)
EXPLAIN (ANALYZE, BUFFERS) SELECT 1 FROM events e WHERE e.event_id = ANY ('{019aa6a0-0000-7000-8000-000000000000}'::uuid[]);
\echo == append-stream: the stream row
EXPLAIN (ANALYZE, BUFFERS) SELECT version FROM streams WHERE stream_id = '$stream';
EOF
	} >"$out" 2>&1
}

# Prepare the fixtures of one size and measure its five cases.
measure_size() { # size
	local size=$1 tag stream order i cursor v k
	tag=s$size
	log "scale $size: preparing the fixtures"
	norders=$((CONNS > 64 ? CONNS : 64))
	create_orders "$norders"
	cp "$work/orders.txt" "$work/orders-$tag.txt"
	# A 100-event stream for read-stream.
	stream="scale-read-$tag-$run_id"
	{
		printf '{"expected_version":0,"events":['
		for ((i = 1; i <= 100; i++)); do ((i > 1)) && printf ','; printf '{"type":"ItemReserved","data":%s}' "$PAYLOAD"; done
		printf ']}'
	} >"$work/scale-read.json"
	[ "$(post_json "/streams/$stream/events" "$work/scale-read.json")" = 201 ] || die "writing $stream failed"
	# A 21-event order (created, 20 lines of schema version 2) for load: below the
	# snapshot interval, so every load reads and folds all of its events.
	order=$(cat /proc/sys/kernel/random/uuid)
	{
		printf '{"expected_version":0,"events":[{"type":"OrderCreated","data":{"customer_id":"c-scale"}}'
		for ((k = 1; k <= 20; k++)); do
			printf ',{"type":"OrderLineAdded","data":{"product_id":"p%d","quantity":%d,"unit_price":{"amount_cents":%d,"currency":"EUR"}},"metadata":{"schema_version":2}}' "$k" $((k % 3 + 1)) $((k * 101))
		done
		printf ']}'
	} >"$work/scale-order.json"
	[ "$(post_json "/streams/order-$order/events" "$work/scale-order.json")" = 201 ] || die "writing order-$order failed"
	# The newest 1000 events for feed-page: the cursor before them, then an append of 1000.
	cursor=$(newest_position)
	{
		printf '{"expected_version":0,"events":['
		for ((i = 1; i <= 1000; i++)); do ((i > 1)) && printf ','; printf '{"type":"ItemReserved","data":%s}' "$PAYLOAD"; done
		printf ']}'
	} >"$work/scale-feed.json"
	[ "$(post_json "/streams/scalefeed-$tag-$run_id/events" "$work/scale-feed.json")" = 201 ] || die "writing the feed page failed"
	psql_q factd -c "VACUUM ANALYZE"
	explain_all "$size" "$stream" "$order" "$cursor"

	# The five cases in turn, SCALE_ROUNDS times: a burst of other work on the
	# machine then hits one round of a case rather than all of it.
	local r conns=$CONNS threads=$THREADS
	for ((r = 1; r <= SCALE_ROUNDS; r++)); do
		measure_wrk "append@$size#$r" append.lua @RUN@ "$PAYLOAD"
		measure_wrk "command@$size#$r" command.lua "$work/orders-$tag.txt" "$THREADS" @RUN@
		measure_wrk "read-stream@$size#$r" get.lua "/streams/$stream/events?limit=100" 200 '"version":100'
		measure_wrk "load@$size#$r" get.lua "/orders/$order" 200 '"version":21'
		# One consumer reading the page over and over, as the feed case reads (one connection).
		CONNS=1 THREADS=1
		measure_wrk "feed-page@$size#$r" get.lua "/events?after=$cursor&limit=1000" 200 '"version":1000'
		CONNS=$conns THREADS=$threads
	done
	# Each figure of a case: the median of its rounds (errors: the sum; other CPU: the most).
	local c k
	for c in $scale_cases; do
		for k in tput p50 p99; do
			declare -n arr="R_$k"
			arr[$c@$size]=$(for ((r = 1; r <= SCALE_ROUNDS; r++)); do echo "${arr[$c@$size#$r]}"; done | sort -g |
				awk '{ v[NR] = $1 } END { printf "%s", (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }')
			unset -n arr
		done
		R_unit[$c@$size]=${R_unit[$c@$size#1]}
		R_err[$c@$size]=0 R_othercpu[$c@$size]=0
		for ((r = 1; r <= SCALE_ROUNDS; r++)); do
			R_err[$c@$size]=$((R_err[$c@$size] + R_err[$c@$size#$r]))
			((R_othercpu[$c@$size#$r] > R_othercpu[$c@$size])) && R_othercpu[$c@$size]=${R_othercpu[$c@$size#$r]}
		done
	done
	S_events[$size]=$(psql_q factd -c "SELECT count(*) FROM events")
	S_bytes[$size]=$(psql_q factd -c "SELECT pg_size_pretty(pg_total_relation_size('events'))")
}

# The table, the targets and the section of RESULTS.md for the sizes measured
# so far: written after each size, so that a run cut short keeps what it measured.
scale_report() { # sizes measured
	local SCALE_SIZES=$1 size c n b pr tr ok t d m base_size load_end sync_end
	local -a verdicts noisy
	read -r load_end _ </proc/loadavg
	sync_end=$(sync_write_us)

	# ---- what each statement reads at each size (EXPLAIN, free of machine noise) ----

	# One row per statement: the buffers its plan's top node touched (shared hit +
	# read) and its execution time, at each size.
	explain_table() {
		local size
		{
			printf 'statement'
			for size in $SCALE_SIZES; do printf '|buffers at %s|ms at %s' "$size" "$size"; done
			echo
			for size in $SCALE_SIZES; do
				awk -v size="$size" '
					/^== / && !/^== size/ { name = $2; sub(/:$/, "", name); order[++n] = name; want = 1; next }
					want && /Buffers: shared/ {
						b = 0
						for (i = 1; i <= NF; i++) if ($i ~ /^(hit|read)=/) { split($i, kv, "="); b += kv[2] }
						buf[name] = b; want = 0
					}
					/Execution Time:/ && name != "" { ms[name] = $3 }
					END { for (i = 1; i <= n; i++) printf "%s %s %s %s\n", order[i], size, buf[order[i]] + 0, ms[order[i]] }
				' "$work/scale-explain-$size.txt"
			done | awk -v sizes="$SCALE_SIZES" '
				{ k = $1; if (!(k in seen)) { seen[k] = 1; names[++n] = k }; b[k, $2] = $3; t[k, $2] = $4 }
				END {
					ns = split(sizes, sz, " ")
					for (i = 1; i <= n; i++) {
						line = names[i]
						for (j = 1; j <= ns; j++) line = line "|" b[names[i], sz[j]] "|" t[names[i], sz[j]]
						print line
					}
				}'
		} >"$work/scale-explain-table.txt"
	}
	explain_table

	# ---- the table: each size against the empty table ----------------------------

	base_size=$(echo "$SCALE_SIZES" | awk '{ print $1 }')
	rel() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0 && a != "-") printf "%.2f", a / b; else printf "-" }'; }
	verdicts=()
	{
		echo "case|events in the table|throughput|unit|p50 ms|p99 ms|errors|p50 vs empty|throughput vs empty|other CPU %"
		for c in $scale_cases; do
			for size in $SCALE_SIZES; do
				n="$c@$size" b="$c@$base_size"
				pr=$(rel "${R_p50[$n]}" "${R_p50[$b]}") tr=$(rel "${R_tput[$n]}" "${R_tput[$b]}")
				echo "$c|${S_events[$size]}|${R_tput[$n]}|${R_unit[$n]}|${R_p50[$n]}|${R_p99[$n]}|${R_err[$n]}|${pr}x|${tr}x|${R_othercpu[$n]}"
			done
		done
	} >"$work/scale-table.txt"
	for c in $scale_cases; do
		for size in $SCALE_SIZES; do
			((size == base_size)) && continue
			pr=$(rel "${R_p50[$c@$size]}" "${R_p50[$c@$base_size]}")
			ok=$(awk -v r="$pr" 'BEGIN { print (r != "-" && r <= 1.2) ? "met" : "MISSED" }')
			verdicts+=("$c at $size events: p50 within 20% of the empty table's|${pr}x|$ok")
		done
	done
	noisy=()
	for c in $scale_cases; do for size in $SCALE_SIZES; do ((${R_othercpu[$c@$size]:-0} > 10)) && noisy+=("$c@$size"); done; done

	echo
	column -t -s '|' "$work/scale-table.txt" 2>/dev/null || tr '|' '\t' <"$work/scale-table.txt"
	echo
	for t in "${verdicts[@]}"; do IFS='|' read -r d m ok <<<"$t"; printf '%-66s %-10s %s\n' "$d" "$m" "$ok"; done
	echo

	# ---- bench/RESULTS.md: the section between the scale markers ------------------

	scale_md_table() { # file with | separated rows, the first one the header
		local first=1 line
		while IFS= read -r line; do
			echo "| ${line//|/ | } |"
			if ((first)); then echo "|$(echo "$line" | sed 's/[^|]*/---/g')|"; first=0; fi
		done <"$1"
	}

	section=$work/scale-section.md
	{
		echo "$SCALE_BEGIN"
		echo "## Cost as the log grows (\`bench/run --scale\`)"
		echo
		echo "Generated by \`bench/run --scale\` on $(date -u '+%Y-%m-%d %H:%M UTC') (commit $commit; load average $load_start before, $load_end after; a synchronous 8 kB write took $sync_start µs before, $sync_end µs after). Each size's figures are compared with the empty table's of the same run; see [README.md](README.md#cost-as-the-log-grows)."
		echo "factd with FACTD_PROJECTIONS=0 FACTD_SAGAS=0; $CONNS connections (feed-page: 1), ${WARMUP} s warm-up then ${DURATION} s per run; each case ran $SCALE_ROUNDS times per size, the five in turn, and each figure is the median of those runs (errors: their sum; other CPU: the most of any)."
		echo
		scale_md_table "$work/scale-table.txt"
		echo
		for size in $SCALE_SIZES; do
			[ -n "${S_load_secs[$size]:-}" ] && echo "- Bulk-loading up to $size events took ${S_load_secs[$size]} s (with VACUUM ANALYZE); events and its indexes then took ${S_bytes[$size]}."
		done
		((${#noisy[@]})) && echo "- **Other processes used more than 10% of a core during: ${noisy[*]}.** Their figures are lower and their latencies longer than an idle machine gives."
		echo
		echo "| target | measured | |"
		echo "|---|---|---|"
		for t in "${verdicts[@]}"; do echo "| ${t//|/ | } |"; done
		echo
		echo "What the statements behind the cases read at each size, from \`EXPLAIN (ANALYZE, BUFFERS)\` (\`.local/bench/scale-explain-<size>.txt\`): the buffers (8 kB pages) the plan's top node touched, and the execution time in ms. Unlike the latencies above, the buffer counts do not depend on what else the machine runs."
		echo
		scale_md_table "$work/scale-explain-table.txt"
		echo "$SCALE_END"
	} >"$section"
	results=$bench/RESULTS.md
	tmp=$(mktemp "$bench/.RESULTS.md.XXXXXX")
	if [ -f "$results" ] && grep -qF "$SCALE_BEGIN" "$results"; then
		awk -v f="$section" -v b="$SCALE_BEGIN" -v e="$SCALE_END" '
			$0 == b { while ((getline l < f) > 0) print l; skip = 1; next }
			$0 == e { skip = 0; next }
			!skip' "$results" >"$tmp"
	else
		{ [ -f "$results" ] && cat "$results" && echo; cat "$section"; } >"$tmp"
	fi
	chmod 644 "$tmp"
	mv "$tmp" "$results"
	log "wrote the scale section of $results (raw outputs and EXPLAIN in $work)"
}

declare -A S_events S_bytes S_load_secs
# The commit measured: taken at the start, as later commits do not change this run.
commit=$(git -C "$root" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
dirty=$(git -C "$root" status --porcelain -- src include migrations meson.build tools bench 2>/dev/null | wc -l)
((dirty > 0)) && commit="$commit (plus $dirty uncommitted changed files in src/, include/, migrations/, bench/)"
read -r load_start _ </proc/loadavg
sync_start=$(sync_write_us)
loaded=0 # bulk-loaded events
done_sizes=""
for size in $SCALE_SIZES; do
	if ((size > loaded)); then
		factd_stop
		log "scale: bulk-loading $((size - loaded)) events ($(((size - loaded) / 10)) orders) up to $size"
		t0=$(now_ns)
		bulk_load $((loaded / 10)) $(((size - loaded) / 10))
		psql_q factd -c "VACUUM ANALYZE"
		S_load_secs[$size]=$(awk -v a="$t0" -v b="$(now_ns)" 'BEGIN { printf "%.0f", (b - a) / 1e9 }')
		log "  took ${S_load_secs[$size]} s with VACUUM ANALYZE"
		loaded=$size
	fi
	[ -n "$factd_pid" ] || factd_start
	measure_size "$size"
	done_sizes="$done_sizes $size"
	scale_report "${done_sizes# }"
done
factd_stop
