#!/usr/bin/env python3
"""Check that a document's code blocks are the files they say they are.

    check_code_blocks.py DOC.md [--all-of DIR]...

Every fenced code block must directly follow a marker line: either
`<!-- file: PATH -->` (PATH relative to the repository, the parent of the
document's folder), and then the block must equal that file byte for byte,
or `<!-- unchecked -->` for a block that is no file (commands to type).
With --all-of DIR, every file under DIR must be quoted somewhere in the
document (but for folders named build* or .*: a build of it made there).
"""
import os, re, sys

def main():
    args = sys.argv[1:]
    dirs = []
    while "--all-of" in args:
        k = args.index("--all-of")
        dirs.append(args[k + 1])
        del args[k:k + 2]
    if len(args) != 1:
        sys.exit(__doc__)
    doc = args[0]
    root = os.path.dirname(os.path.dirname(os.path.abspath(doc)))
    lines = open(doc, encoding="utf-8").read().split("\n")
    errors, quoted = [], set()
    i = 0
    while i < len(lines):
        m = re.match(r"^(```+|~~~+)", lines[i])
        if not m:
            i += 1
            continue
        fence, start = m.group(1), i
        j = i + 1
        while j < len(lines) and not lines[j].startswith(fence):
            j += 1
        if j == len(lines):
            errors.append(f"{doc}:{start + 1}: code block never closed")
            break
        body = "\n".join(lines[start + 1:j]) + "\n"
        k = start - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        marker = re.match(r"^<!-- (?:file: (\S+)|(unchecked)) -->$", lines[k]) if k >= 0 else None
        if not marker:
            errors.append(f"{doc}:{start + 1}: code block without <!-- file: PATH --> or <!-- unchecked --> before it")
        elif marker.group(1):
            path = marker.group(1)
            quoted.add(os.path.normpath(path))
            try:
                want = open(os.path.join(root, path), encoding="utf-8").read()
            except OSError as e:
                errors.append(f"{doc}:{start + 1}: {path}: {e.strerror}")
            else:
                if body != want:
                    a, b = want.split("\n"), body.split("\n")
                    n = next((x for x in range(min(len(a), len(b))) if a[x] != b[x]), min(len(a), len(b)))
                    errors.append(f"{doc}:{start + 2 + n}: the block differs from {path} at its line {n + 1}:\n"
                                  f"  file:  {a[n] if n < len(a) else '(end)'}\n  block: {b[n] if n < len(b) else '(end)'}")
        i = j + 1
    for d in dirs:
        files = []
        for top, subdirs, names in os.walk(os.path.join(root, d)):
            subdirs[:] = sorted(s for s in subdirs if not s.startswith((".", "build")))
            files += [os.path.relpath(os.path.join(top, n), root) for n in sorted(names)]
        for f in files:
            if os.path.normpath(f) not in quoted:
                errors.append(f"{doc}: {f} is not quoted (every file of {d} is)")
    for e in errors:
        print(e, file=sys.stderr)
    sys.exit(1 if errors else 0)

main()
