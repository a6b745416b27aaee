#!/usr/bin/env python3
"""Run an app against a fresh database and check the curl session its docs show.

    run_session.py APP_BINARY SESSION.sh [--db URL]

The session is a shell script as a reader would type it: commands against
localhost:8080, each followed directly (no blank line between) by comment
lines with the output it must give.  Comments after a blank line are prose;
commands without an output (H='...') are run and kept for later commands.
Outputs are compared as JSON values when both sides parse as JSON ("..."
stands for any value, and a "...": "..." member for any further members),
else as text.  Reads (commands without -X) are retried for up to 20 s while
they differ: projections and sagas follow the log a moment behind.

The app is started with FACTD_LISTEN=127.0.0.1:0 on the database --db or, by
default, a new empty one made through FACTD_TEST_ADMIN_URL (the app migrates
it at start), and stopped with SIGTERM at the end, which must exit 0.
"""
import json, os, re, signal, subprocess, sys, tempfile, time, urllib.parse, urllib.request, uuid

def parse(path):
    steps, cur = [], None
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.startswith("#"):
            i += 1
            continue
        cmd = [line]
        while cmd[-1].endswith("\\") and i + 1 < len(lines):
            i += 1
            cmd.append(lines[i])
        i += 1
        out = []
        while i < len(lines) and lines[i].startswith("#"):
            out.append(re.sub(r"^# ?", "", lines[i]))
            i += 1
        steps.append(("\n".join(cmd), "\n".join(out) if out else None))
    return steps

def matches(want, got):
    if want == "...":
        return True
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return False
        extra = want.get("...") == "..."
        keys = set(want) - {"..."}
        if not keys <= set(got) or (not extra and set(got) != keys):
            return False
        return all(matches(want[k], got[k]) for k in keys)
    if isinstance(want, list):
        return isinstance(got, list) and len(want) == len(got) and all(matches(w, g) for w, g in zip(want, got))
    return type(want) == type(got) and want == got

def same(want, got):
    try:
        return matches(json.loads(want), json.loads(got))
    except ValueError:
        return want.rstrip() == got.rstrip()

def main():
    args = sys.argv[1:]
    db = None
    if "--db" in args:
        k = args.index("--db")
        db = args[k + 1]
        del args[k:k + 2]
    if len(args) != 2:
        sys.exit(__doc__)
    binary, session = args
    made = None
    if not db:
        admin = os.environ.get("FACTD_TEST_ADMIN_URL") or sys.exit("run_session: set FACTD_TEST_ADMIN_URL or give --db")
        made = "session_" + uuid.uuid4().hex[:12]
        subprocess.run(["psql", admin, "-qc", f"CREATE DATABASE {made}"], check=True, stdout=subprocess.DEVNULL)
        db = urllib.parse.urlunsplit(urllib.parse.urlsplit(admin)._replace(path="/" + made))
    env = dict(os.environ, FACTD_DATABASE_URL=db, FACTD_LISTEN="127.0.0.1:0")
    log = tempfile.NamedTemporaryFile(prefix="session-", suffix=".log", delete=False)
    app = subprocess.Popen([binary, "serve"], env=env, stdout=log, stderr=log)
    ok = False
    try:
        port = None
        deadline = time.time() + 30
        while port is None:
            if app.poll() is not None or time.time() > deadline:
                raise SystemExit(f"run_session: {binary} did not start listening")
            for line in open(log.name, encoding="utf-8", errors="replace"):
                if '"msg":"listening"' in line:
                    port = json.loads(line)["port"]
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        while True:
            try:
                if urllib.request.urlopen(base + "/readyz", timeout=5).status == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise SystemExit("run_session: /readyz never answered 200")
            time.sleep(0.1)
        prefix = []
        for cmd, want in parse(session):
            script = "\n".join(prefix + [cmd.replace("localhost:8080", f"127.0.0.1:{port}")])
            read = want is not None and " -X " not in cmd
            until = time.time() + 20
            while True:
                r = subprocess.run(["bash", "-c", "set -euo pipefail\n" + script], env=env, capture_output=True, text=True)
                got = r.stdout.rstrip("\n")
                if r.returncode == 0 and (want is None or same(want, got)):
                    break
                if not read or time.time() > until:
                    raise SystemExit(f"run_session: FAILED\n$ {cmd}\nwant: {want}\ngot:  {got}\n"
                                     f"exit {r.returncode}: {r.stderr.strip()}")
                time.sleep(0.2)
            print(f"ok: {cmd.splitlines()[0]}")
            if want is None and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", cmd):
                prefix.append(cmd)
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
            print(f"run_session: {binary} exited {app.returncode} after SIGTERM", file=sys.stderr)
            ok = False
        if not ok:
            sys.stderr.write(open(log.name, encoding="utf-8", errors="replace").read()[-20000:])
        os.unlink(log.name)
        if made and ok:
            subprocess.run(["psql", os.environ["FACTD_TEST_ADMIN_URL"], "-qc", f"DROP DATABASE {made}"],
                           stdout=subprocess.DEVNULL)
    sys.exit(0 if ok else 1)

main()
