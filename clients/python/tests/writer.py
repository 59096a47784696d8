"""The child of a Rust `leasehold run` holder in the tests: writes
`work <LEASEHOLD_TOKEN> <monotonic ns> <tag>` to LOG every 5 ms until killed,
like a job writing to a fenced resource."""

import os
import sys
import time

log, tag = sys.argv[1], sys.argv[2]
token = os.environ["LEASEHOLD_TOKEN"]
with open(log, "a") as f:
    f.write(f"enter {token} {time.monotonic_ns()} {tag}\n")
    f.flush()
    while True:
        f.write(f"work {token} {time.monotonic_ns()} {tag}\n")
        f.flush()
        time.sleep(0.005)
