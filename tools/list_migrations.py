#!/usr/bin/env python3
"""Print the migration files of a directory, one per line, in apply order."""
import os, re, sys
d = sys.argv[1]
names = sorted(n for n in os.listdir(d) if re.fullmatch(r"\d{4}_[a-z0-9_]+\.sql", n))
print("\n".join(os.path.join(d, n) for n in names))
