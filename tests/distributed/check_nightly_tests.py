#!/usr/bin/python3
"""tests/distributed/check_nightly_tests.py: are the GPU nightly's CTest tests registered
as docs/distributed.md says? Reads `ctest --show-only=json-v1 -L nightly-cuda`.

  check_nightly_tests.py SHOW_ONLY.json

One test nightly.cuda.<scenario> per scenarios/nightly/gpu/*.yaml, run through
scripts/ctest-pin and taking a whole GPU (4 slots, FUSECHECK_GPU_SLOTS as configured by
the caller), and nightly.cuda.judge ordered after all of them. Prints what is wrong;
exit 0 when nothing is.
"""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WHOLE_GPU = [{"requirements": [{".type": "gpus", "slots": 4}]}]


def properties(test):
    return {p["name"]: p["value"] for p in test.get("properties", [])}


def problems(tests):
    folder = os.path.join(ROOT, "scenarios/nightly/gpu")
    scenarios = sorted(f[: -len(".yaml")] for f in os.listdir(folder) if f.endswith(".yaml"))
    out = []
    for s in scenarios:
        test = tests.get(f"nightly.cuda.{s}")
        if not test:
            out.append(f"no test nightly.cuda.{s}")
            continue
        if test["command"][0] != os.path.join(ROOT, "scripts/ctest-pin"):
            out.append(f"nightly.cuda.{s}: not run through scripts/ctest-pin: {test['command'][:2]}")
        if properties(test).get("RESOURCE_GROUPS") != WHOLE_GPU:
            out.append(f"nightly.cuda.{s}: does not take a whole GPU: {properties(test).get('RESOURCE_GROUPS')}")
    judge = tests.get("nightly.cuda.judge")
    if not judge or sorted(properties(judge).get("DEPENDS", [])) != [f"nightly.cuda.{s}" for s in scenarios]:
        out.append("nightly.cuda.judge does not come after every scenario's test")
    return out


def main():
    with open(sys.argv[1]) as f:
        tests = {t["name"]: t for t in json.load(f)["tests"]}
    found = problems(tests)
    for line in found:
        print(line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
