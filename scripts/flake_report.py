"""Per test, how often it failed over several pytest runs (their JUnit XML reports).

    python scripts/flake_report.py run-1.xml run-2.xml ...

Prints the runs that were green, then every test that failed or errored at least once with
its count and the first line of its first failure; exits 1 when any run was not green.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path


def outcomes(report: Path) -> dict[str, str | None]:
    """{test id: None when it passed or was skipped, else the first line of its failure}."""
    results: dict[str, str | None] = {}
    if not report.exists():  # pytest died before writing it: a red run with no tests
        return results
    for case in ET.parse(report).iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        problem = case.find("failure") if case.find("failure") is not None else case.find("error")
        if problem is None:
            results.setdefault(name, None)
        else:
            results[name] = (problem.get("message") or "").splitlines()[0][:160] if (
                problem.get("message")) else problem.tag
    return results


def main(paths: list[str]) -> int:
    if not paths:
        print(__doc__)
        return 2
    runs = [outcomes(Path(p)) for p in paths]
    failed: Counter[str] = Counter()
    first: dict[str, str] = {}
    for run in runs:
        for name, problem in run.items():
            if problem is not None:
                failed[name] += 1
                first.setdefault(name, problem)
    green = sum(1 for run in runs if all(p is None for p in run.values()) and run)
    tests = len(set().union(*runs))
    print(f"\n{green} of {len(runs)} run(s) green; {tests} tests; "
          f"{len(failed)} failed at least once")
    for name, count in failed.most_common():
        print(f"  {count}/{len(runs)}  {name}\n         {first[name]}")
    return 0 if green == len(runs) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
