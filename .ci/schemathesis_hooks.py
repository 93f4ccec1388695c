"""Schemathesis hooks for `.ci/schemathesis` (loaded through SCHEMATHESIS_HOOKS).

`Idempotency-Key` (SPEC §1.9) replays the saved answer of an earlier request with the same key,
method, path and body. Generated keys repeat (Hypothesis favours short values), so a "creation"
can be the replay of one whose resource has since been deleted, which the stateful checks would
take for a lost write. Each well-formed key gets a unique suffix (staying within 255 printable
ASCII characters); malformed keys are sent as generated, so their rejection is still tested.

An event stream (`…/stream`) follows the log until the client leaves; Schemathesis reads a whole
body, so each stream request is sent with `follow=false` (the events to the current end, then the
end of the body). Its other parameters are sent as generated.

`Ipto-Log-Position` names a place in the log that a response carried; one no response carried is
400, though the schema cannot tell it from a real one. A well-formed value is sent as `0.0` (the
start of the log, which every instance has applied); malformed values are sent as generated.
"""

import re
import uuid

import schemathesis

WELL_FORMED = re.compile(r"[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?")
LOG_POSITION = re.compile(r"[0-9]{1,18}\.[0-9]{1,18}")


@schemathesis.hook
def before_call(context, case, kwargs):
    if case.path.endswith("/stream"):
        case.query = {**(case.query or {}), "follow": "false"}
    headers = case.headers or {}
    for name, value in list(headers.items()):
        if name.lower() == "ipto-log-position" and isinstance(value, str):
            # Schemathesis 4.32.5's coverage phase can also send a malformed value in a case it
            # reads as positive (its header component negative): sent as `0.0` too.
            if LOG_POSITION.fullmatch(value) or case.meta.generation.mode.is_positive:
                headers[name] = "0.0"
            continue
        if name.lower() != "idempotency-key" or not isinstance(value, str):
            continue
        if WELL_FORMED.fullmatch(value) and len(value) <= 255 - 33:
            headers[name] = f"{value}.{uuid.uuid4().hex}"
