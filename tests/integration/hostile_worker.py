"""A pre-imported worker for the hostile-input suite (tests/integration/test_hostile.py).

It imports torch and convkit once, then reads one JSON request a line on stdin,
{"case": name, "backend": "cpu" | "cudasim"}, runs that case of tests/integration/hostile_cases.py under
`convkit.use_backend(backend)`, and answers one JSON line on the file descriptor it was given
(`--reply-fd`, so that whatever a kernel or library prints on stdout cannot garble a reply):
{"outcome": "ok" | "fail", "detail": text}. A case that crashes the process or never returns is
the parent's to see: it kills and restarts the worker.
"""
import json
import os
import sys
import traceback

os.environ.setdefault("CONVKIT_POISON", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import hostile_cases  # noqa: E402  (imports torch, numpy and convkit)


def main() -> None:
    reply_fd = int(sys.argv[sys.argv.index("--reply-fd") + 1])
    reply = os.fdopen(reply_fd, "w", buffering=1)
    reply.write(json.dumps({"outcome": "ready"}) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        try:
            detail = hostile_cases.run(req["case"], req["backend"])
            out = {"outcome": "ok", "detail": detail or ""}
        except BaseException as e:  # noqa: BLE001 - a KeyboardInterrupt escaping a case is a failure too
            out = {"outcome": "fail", "detail": "".join(traceback.format_exception(type(e), e, e.__traceback__))[-4000:]}
        reply.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
