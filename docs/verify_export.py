#!/usr/bin/env python3
"""Verifies an `ordo export` file (JSON lines) without Ordo's code: Python 3 standard library only.

    python3 docs/verify_export.py log.jsonl      # or - for stdin

Recomputes every event's hash as docs/hash-chain.md specifies,

    hash = sha256(prev_hash || content || "|" || version || "|" || recorded_at)

and, where a stream's previous event is in the export too, checks that the event points at its
hash. Prints {"ok", "checked", "broken": [{line, category, stream_id, version, problem}]} and
exits 0 when nothing is broken, 1 otherwise, 2 when the file cannot be read as an export.
"""

import hashlib
import json
import re
import sys

RECORDED_AT = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(?:Z|\+00:00)$")


class Unverifiable(Exception):
    """A value whose exact bytes this specification does not define."""


def canonical(value):
    """JSON with object keys sorted by code point at every level and no white space.

    Strings are escaped as serde_json escapes them: `"` and `\\` with a backslash, the control
    characters U+0000..U+001F as \\b \\t \\n \\f \\r or \\u00xx (lower-case hex), everything
    else as UTF-8. json.dumps with ensure_ascii=False writes exactly that for a string.
    """
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        raise Unverifiable(f"the number {value!r} is not an integer")
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ",".join(canonical(v) for v in value) + "]"
    if isinstance(value, dict):
        # Python compares str by code point, as Rust compares String by UTF-8 bytes.
        return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + canonical(value[k]) for k in sorted(value)) + "}"
    raise Unverifiable(f"a {type(value).__name__} has no JSON form")


def micros(recorded_at):
    """recorded_at as hashed: RFC 3339 UTC with exactly six fraction digits and "Z"."""
    m = RECORDED_AT.match(recorded_at)
    if not m:
        raise Unverifiable(f"recorded_at {recorded_at!r} is not an RFC 3339 UTC time")
    fraction = (m.group(2) or "").ljust(9, "0")
    if not fraction.endswith("000"):
        raise Unverifiable(f"recorded_at {recorded_at!r} is finer than microseconds")
    return f"{m.group(1)}.{fraction[:6]}Z"


def event_hash(envelope):
    """The hash an exported envelope should carry, as hex."""
    metadata = dict(envelope["metadata"])
    recorded_at = metadata.pop("recorded_at")
    content = canonical(
        {
            "category": envelope["category"],
            "data": envelope["data"],
            "event_id": metadata["event_id"],
            "metadata": metadata,
            "schema_version": envelope["schema_version"],
            "stream_id": envelope["stream_id"],
            "type": envelope["type"],
        }
    )
    prev = bytes.fromhex(envelope["prev_hash"]) if envelope.get("prev_hash") else b""
    tail = f"|{envelope['version']}|{micros(recorded_at)}"
    return hashlib.sha256(prev + content.encode("utf-8") + tail.encode("utf-8")).hexdigest()


def verify(lines):
    last = {}  # (category, stream_id) -> (version, hash)
    checked, broken = 0, []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        envelope = json.loads(line)
        checked += 1
        stream = (envelope["category"], envelope["stream_id"])
        problem = None
        try:
            if event_hash(envelope) != envelope["hash"]:
                problem = "hash_mismatch"
        except Unverifiable as e:
            problem = f"unverifiable: {e}"
        if problem is None and stream in last:
            version, previous = last[stream]
            if version + 1 == envelope["version"] and envelope.get("prev_hash") != previous:
                problem = "prev_hash_mismatch"
        if problem:
            broken.append(
                {
                    "line": number,
                    "category": envelope["category"],
                    "stream_id": envelope["stream_id"],
                    "version": envelope["version"],
                    "problem": problem,
                }
            )
        last[stream] = (envelope["version"], envelope["hash"])
    return {"ok": not broken, "checked": checked, "broken": broken}


def main(argv):
    if len(argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    try:
        if argv[1] == "-":
            report = verify(sys.stdin)
        else:
            with open(argv[1], encoding="utf-8") as f:
                report = verify(f)
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"error: not an ordo export: {e}", file=sys.stderr)
        return 2
    print(json.dumps(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
