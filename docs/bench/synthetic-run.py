#!/usr/bin/env python3
"""A 60-testcase results directory made of real testcase directories, for
measuring the run's page (docs/bench/report-page.md): N plain passing
testcases, M passing power cuts and K failing lying-disk controls, each a
copy of a real one under a new name (crash images left out).

    synthetic-run.py LYING_RUN POWERCUT_RUN OUT [PLAIN POWERCUT LYING]

LYING_RUN: a run of testcases/controls/lying-disk-xfs-4k.yaml;
POWERCUT_RUN: a run whose first testcase is a passing power cut.
"""
import json, os, shutil, sys

src_lying, src_pc, out = sys.argv[1:4]
n_plain, n_pc, n_lying = (int(x) for x in (sys.argv[4:7] or (46, 12, 2)))
shutil.rmtree(out, ignore_errors=True)
os.makedirs(out)
L = json.load(open(os.path.join(src_lying, "summary.json")))
P = json.load(open(os.path.join(src_pc, "summary.json")))
lying, pc = L["suites"][0], P["suites"][0]
suites = []


def add(s, srcdir, name, crash=True):
    s = json.loads(json.dumps(s))
    old, s["name"] = s["name"], name
    s["console_log"] = f"{name}/console.log"
    s["reproduce"] = s.get("reproduce", "").replace(old, name)
    for r in s["results"]:
        r["case"] = name
    shutil.copytree(os.path.join(srcdir, old), os.path.join(out, name),
                    ignore=shutil.ignore_patterns("base.raw.zst", "delta.bin.zst"))
    if not crash:
        shutil.rmtree(os.path.join(out, name, "crash"), ignore_errors=True)
    suites.append(s)


# A plain testcase: a dozen passing checks, no power cut.
plain = json.loads(json.dumps(pc))
plain["results"] = [r for r in plain["results"] if r["check"].startswith("step")][:12]
for r in plain["results"]:
    r["outcome"] = {"status": "passed"}
plain["properties"] = {k: v for k, v in plain["properties"].items()
                       if not k.startswith(("power_cut", "verify"))}
for i in range(n_plain):
    add(plain, src_pc, f"plain-{i:02}", crash=False)
for i in range(n_pc):
    add(pc, src_pc, f"powercut-{i:02}")
for i in range(n_lying):
    add(lying, src_lying, f"lying-{i:02}")
L["suites"], L["run_id"] = suites, f"synthetic-{len(suites)}"
json.dump(L, open(os.path.join(out, "summary.json"), "w"), indent=1)
print(len(suites), "testcases in", out)
