#!/usr/bin/env python3
"""Summarizes an Autobahn|Testsuite fuzzingclient report (index.json plus the
per-case JSON files beside it) for tests/autobahn/run.

Usage: summarize.py REPORT_DIR [LABEL]

Prints the count of cases per verdict and every case that is not plainly OK,
with what the case checks and what the report says the server did. Exits 1
if any case FAILED (or the report holds no case), else 0.

A case's verdict is Autobahn's own `behavior` (the cell colour of its HTML
report), except that a closing-handshake verdict Autobahn shows in red
(`behaviorClose` FAILED or UNCLEAN) makes the case FAILED too. A verdict
outside Autobahn's set (the runner's ERROR: the case could not run) counts as
FAILED.
"""

import collections
import html
import json
import os
import re
import sys

VERDICTS = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
# Close verdicts that are fine as they are; the others are listed.
CLOSE_FINE = {"OK", "INFORMATIONAL"}
# Close verdicts Autobahn's report shows as a failure.
CLOSE_FATAL = {"FAILED", "UNCLEAN"}


def case_key(case_id):
    return [int(p) for p in case_id.split(".")]


def plain(text, limit=200):
    """One line of text from a case's HTML-ish DESCRIPTION."""
    text = re.sub(r"<br\s*/?>", " ", text or "")
    text = html.unescape(re.sub(r"<[^>]+>", "", text))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def verdict(entry):
    behavior = entry.get("behavior")
    if entry.get("behaviorClose") in CLOSE_FATAL:
        return "FAILED"
    if behavior in VERDICTS:
        return behavior
    return "FAILED"


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: summarize.py REPORT_DIR [LABEL]")
    outdir = sys.argv[1]
    label = sys.argv[2] if len(sys.argv) > 2 else ""
    with open(os.path.join(outdir, "index.json")) as f:
        index = json.load(f)

    counts = collections.Counter()
    listed = []
    total = 0
    for agent, cases in sorted(index.items()):
        for case_id in sorted(cases, key=case_key):
            entry = cases[case_id]
            total += 1
            v = verdict(entry)
            counts[v] += 1
            if v != "OK" or entry.get("behaviorClose") not in CLOSE_FINE:
                listed.append((agent, case_id, v, entry))

    title = "Autobahn|Testsuite fuzzingclient"
    if label:
        title += f" ({label})"
    print(f"{title}: {total} cases, report in {outdir}")
    print("  " + ", ".join(f"{v} {counts.get(v, 0)}" for v in VERDICTS))
    if listed:
        print("cases that are not plainly OK:")
    for agent, case_id, v, entry in listed:
        detail = {}
        report = entry.get("reportfile")
        if report:
            try:
                with open(os.path.join(outdir, report)) as f:
                    detail = json.load(f)
            except OSError as error:
                detail = {"result": f"(no case report: {error})"}
        close = entry.get("behaviorClose")
        code = entry.get("remoteCloseCode")
        reason = detail.get("remoteCloseReason")
        print(
            f"  {case_id:<9} {v:<13} (behavior {entry.get('behavior')}, "
            f"close {close}, server's close code {code}"
            + (f" {reason!r}" if reason else "")
            + ")"
        )
        if detail.get("description"):
            print(f"      checks:   {plain(detail['description'])}")
        if detail.get("expectation"):
            print(f"      expects:  {plain(detail['expectation'])}")
        if detail.get("result") or detail.get("resultClose"):
            print(
                f"      observed: {plain(detail.get('result', ''))} "
                f"{plain(detail.get('resultClose', ''))}".rstrip()
            )
        if "received" in detail and "expected" in detail:
            print(f"      received: {plain(json.dumps(detail['received']), 160)}")
            print(f"      expected: {plain(json.dumps(detail['expected']), 160)}")

    failed = counts.get("FAILED", 0)
    # The plain closing line a CI log reader understands.
    print(f"autobahn: {total - failed} passed, {failed} failed")
    if total == 0:
        print("no case ran", file=sys.stderr)
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
