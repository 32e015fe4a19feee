#!/usr/bin/env python3
"""perf/check's comparison: instruction counts from iai-callgrind's output against the
committed baseline. Usage: compare.py OUTPUT BASELINE.json [--update]."""
import json
import re
import sys

LIMIT = 0.02  # a regression past 2% fails


def counts(text):
    """{bench id: instructions} from iai-callgrind's report ("module::group::name id:args"
    then "  Instructions: N|…")."""
    out, bench = {}, None
    for line in text.splitlines():
        m = re.match(r"^(iai_\w+::\w+::\w+) ([\w-]+):", line)
        if m:
            bench = f"{m.group(1)} {m.group(2)}"
            continue
        m = re.match(r"^\s+Instructions:\s+(\d+)\|", line)
        if m and bench:
            out[bench] = int(m.group(1))
            bench = None
    return out


def main():
    output, baseline_path = sys.argv[1], sys.argv[2]
    now = counts(open(output).read())
    if not now:
        sys.exit(f"perf/check: no instruction counts in the bench output:\n{open(output).read()}")
    if "--update" in sys.argv[3:]:
        with open(baseline_path, "w") as f:
            json.dump(dict(sorted(now.items())), f, indent=1)
            f.write("\n")
        print(f"perf/check: baseline written ({len(now)} benches) to {baseline_path}")
        return
    base = json.load(open(baseline_path))
    passed = failed = 0
    better = False
    print(f"{'bench':<58} {'baseline':>10} {'now':>10} {'change':>8}")
    for bench in sorted(set(base) | set(now)):
        b, n = base.get(bench), now.get(bench)
        if b is None or n is None:
            failed += 1
            why = "not in the baseline" if b is None else "no longer run"
            print(f"{bench:<58} {b or '-':>10} {n or '-':>10}  FAIL: {why}")
            continue
        change = n / b - 1
        verdict = ""
        if change > LIMIT:
            failed += 1
            verdict = f"  REGRESSION (over +{LIMIT:.0%})"
        else:
            passed += 1
            if change < -LIMIT:
                better, verdict = True, "  improved"
        print(f"{bench:<58} {b:>10} {n:>10} {change:>+8.2%}{verdict}")
    if better:
        print("perf/check: counts improved; if that is the change's doing, refresh the baseline: perf/check --update")
    if failed:
        print("perf/check: a hot path got slower (or a bench is missing from the baseline); "
              "if that is intended, say why in the commit and run perf/check --update")
    # The closing line scripts/test.sh adds to its total.
    print(f"perf: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
