#!/usr/bin/env python3
"""The tutorial's GET /books reads through the read seam (fd_req_read_pool).

    tutorial_replica.py LIBRARY_BINARY

Runs the library on a new database made through FACTD_TEST_ADMIN_URL, with
FACTD_READ_DATABASE_URL naming the same database on the streaming standby
scripts/test starts (FACTD_TEST_STANDBY_URL).  Checks that:
  - a book added is listed by GET /books?min_position=<its position> at once
    (read-your-writes: from the standby once it has replayed the write, else
    from the primary);
  - GET /books is served by the standby (X-Factd-Replica: 0) once it has
    replayed the shelf, and lists the book there;
  - a bad ?min_position= is a 400 invalid-parameter problem;
  - the library stops with exit code 0 on SIGTERM.
"""
import json, os, signal, subprocess, sys, tempfile, time, urllib.error, urllib.parse, urllib.request, uuid


def request(base, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return r.status, r.headers, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, e.headers, json.loads(e.read() or b"null")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    binary = sys.argv[1]
    admin = os.environ.get("FACTD_TEST_ADMIN_URL") or sys.exit("tutorial_replica: set FACTD_TEST_ADMIN_URL")
    standby = os.environ.get("FACTD_TEST_STANDBY_URL") or sys.exit("tutorial_replica: set FACTD_TEST_STANDBY_URL")
    name = "replica_" + uuid.uuid4().hex[:12]
    subprocess.run(["psql", admin, "-qc", f"CREATE DATABASE {name}"], check=True, stdout=subprocess.DEVNULL)
    on = lambda url: urllib.parse.urlunsplit(urllib.parse.urlsplit(url)._replace(path="/" + name))
    env = dict(os.environ, FACTD_DATABASE_URL=on(admin), FACTD_READ_DATABASE_URL=on(standby),
               FACTD_LISTEN="127.0.0.1:0")
    log = tempfile.NamedTemporaryFile(prefix="tutorial-replica-", suffix=".log", delete=False)
    app = subprocess.Popen([binary, "serve"], env=env, stdout=log, stderr=log)
    ok = False
    try:
        port, deadline = None, time.time() + 30
        while port is None:
            if app.poll() is not None or time.time() > deadline:
                raise SystemExit(f"tutorial_replica: {binary} did not start listening")
            for line in open(log.name, encoding="utf-8", errors="replace"):
                if '"msg":"listening"' in line:
                    port = json.loads(line)["port"]
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port}"

        status, _, body = request(base, "POST", "/books", {"book_id": "walden", "title": "Walden"})
        assert status in (200, 201), f"POST /books answered {status}: {body}"
        position = body["position"]

        # Read-your-writes: the book is there right away, whichever database served it.
        status, headers, body = request(base, "GET", f"/books?min_position={position}")
        assert status == 200, f"GET /books?min_position={position} answered {status}: {body}"
        assert [b["book_id"] for b in body["books"]] == ["walden"], f"the write is missing: {body}"
        print(f"ok: GET /books?min_position={position} lists the book "
              f"(X-Factd-Replica: {headers.get('X-Factd-Replica')})")

        # The standby serves the list once it has replayed the shelf.
        served, until = None, time.time() + 60
        while time.time() < until:
            status, headers, body = request(base, "GET", "/books")
            if status == 200 and headers.get("X-Factd-Replica") == "0" and body["books"]:
                served = body
                break
            time.sleep(0.2)
        assert served is not None, f"GET /books was never served by the standby (last: {status} {dict(headers)} {body})"
        assert [b["book_id"] for b in served["books"]] == ["walden"], f"the standby's shelf: {served}"
        print("ok: GET /books served by the standby (X-Factd-Replica: 0)")

        status, _, body = request(base, "GET", "/books?min_position=nope")
        assert status == 400 and body["type"].endswith("/invalid-parameter") and body["parameter"] == "min_position", \
            f"GET /books?min_position=nope answered {status}: {body}"
        print("ok: GET /books?min_position=nope is 400 invalid-parameter")
        ok = True
    finally:
        if app.poll() is None:
            app.send_signal(signal.SIGTERM)
            try:
                app.wait(timeout=30)
            except subprocess.TimeoutExpired:
                app.kill()
                app.wait()
        if ok and app.returncode != 0:
            print(f"tutorial_replica: {binary} exited {app.returncode} after SIGTERM", file=sys.stderr)
            ok = False
        if not ok:
            sys.stderr.write(open(log.name, encoding="utf-8", errors="replace").read()[-20000:])
        os.unlink(log.name)
        if ok:
            subprocess.run(["psql", admin, "-qc", f"DROP DATABASE {name} WITH (FORCE)"], stdout=subprocess.DEVNULL)
    sys.exit(0 if ok else 1)


main()
