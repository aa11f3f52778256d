"""Run mutmut's mutants of a scratch folder one by one, each in a forked child of one warmed process
(mutmut's trampolines read MUTANT_UNDER_TEST at every call), with a wall-clock limit per mutant.

For machines where mutmut's own forked workers end with "timeout" at once (seen on a loaded 2-core
box for the costs room). Run it inside the ``mutants/`` folder that scripts/mutation.py left:

    cd /tmp/mut-costs/mutants
    MUTANT_UNDER_TEST= python /path/to/scripts/mutants_in_process.py NAMES.json \
        tests/memory/test_cost_model.py,tests/memory/test_planner.py OUT.json 40 torch,wan_studio.memory.costs

For the manager room warm ``torch,wan_studio.memory.manager,wan_studio.memory.loaders,
wan_studio.memory.planner,wan_studio.memory.hardware`` (loaders imports diffusers: 17 s a test run).

NAMES.json: a list of mutant names (e.g. the keys of results.json); OUT.json gets name -> killed,
survived, no tests or timeout (a hang past the limit). Check one made-up name first: it must survive.
"""
import json, os, sys, io, contextlib, time, signal
import pytest
sys.path.insert(0, os.getcwd())
for _m in (sys.argv[5].split(",") if len(sys.argv) > 5 else []):
    __import__(_m)
# The warmed modules (torch, transformers, ...) leave out of every collection: the manager calls
# gc.collect() at each release; traversing that heap made a pass of its tests take 69 s, not 3 s.
import gc
gc.collect()
gc.freeze()
names = json.load(open(sys.argv[1]))
tests = sys.argv[2].split(",")
limit = float(sys.argv[4]) if len(sys.argv) > 4 else 60.0
out = {}
for i, name in enumerate(names):
    pid = os.fork()
    if pid == 0:
        os.environ["MUTANT_UNDER_TEST"] = name
        fd = os.open(os.devnull, os.O_WRONLY); os.dup2(fd, 1); os.dup2(fd, 2)
        rc = pytest.main(["-p", "no:cacheprovider", "-q", "-x", *tests])
        os._exit(int(rc))
    deadline = time.monotonic() + limit
    status = None
    while time.monotonic() < deadline:
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            status = os.waitstatus_to_exitcode(st)
            break
        time.sleep(0.05)
    if status is None:
        os.kill(pid, signal.SIGKILL); os.waitpid(pid, 0)
        out[name] = "timeout"
    else:
        out[name] = {0: "survived", 1: "killed", 5: "no tests"}.get(status, f"rc {status}")
    print(i, name, out[name], flush=True)
json.dump(out, open(sys.argv[3], "w"), indent=0)
