"""A target that spawns children and reports what each one saw, as JSON on stdout.

Run once as ``headstart run --no-zygote`` (real spawn) and once with ``--zygote``: the two
reports must match, pids aside. ``argv[1]`` names the scenario.
"""

import json
import multiprocessing as mp
import os
import signal
import sys
import time


def _inheritable_fds():
    out = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if os.get_inheritable(fd):
                out.append(fd)
        except OSError:
            pass  # the listdir's own descriptor, closed already
    return sorted(out)


def _handler_name(sig):
    h = signal.getsignal(sig)
    return {signal.SIG_IGN: "ignore", signal.SIG_DFL: "default"}.get(h, getattr(h, "__name__", "?"))


def report(conn, extra_fd):
    import random

    seen = {
        "env": os.environ.get("ZYG_SET_BEFORE_SPAWN"),
        "env_removed": "ZYG_REMOVED_BEFORE_SPAWN" in os.environ,
        "cwd": os.getcwd(),
        "umask": oct(os.umask(0o22)),
        "argv": sys.argv,
        "path_tail": sys.path[-1],
        "main_name": sys.modules["__main__"].__name__,
        "main_marker": getattr(sys.modules["__main__"], "MARKER", None),
        "fds": _inheritable_fds(),
        "extra_fd_open": _is_open(extra_fd),
        "sigint": _handler_name(signal.SIGINT),
        "sigusr1": _handler_name(signal.SIGUSR1),
        "sigusr2": _handler_name(signal.SIGUSR2),
        "sigpipe": _handler_name(signal.SIGPIPE),
        "blocked": sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])),
        "random": random.random(),
        "parent_alive": mp.parent_process() is not None and mp.parent_process().is_alive(),
        "name": mp.current_process().name,
        "start_method": mp.get_start_method(),
    }
    if os.environ.get("ZYG_TORCH"):
        import torch  # preloaded in the zygote, imported afresh by a real spawn


        seen["torch_rand"] = float(torch.rand(1)[0])
    print("child stdout line", flush=True)
    conn.send(seen)
    conn.close()


def _is_open(fd):
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def exit_with(how):
    if how == "return":
        return
    if how == "sys.exit(7)":
        sys.exit(7)
    if how == "raise":
        raise RuntimeError("boom")
    if how == "os._exit(3)":
        os._exit(3)
    if how == "SIGTERM self":
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    if how == "sleep":
        time.sleep(30)


def wait_for_parent_death(path):
    mp.parent_process().join()  # returns when the parent is gone (its sentinel)
    with open(path, "w") as fh:
        fh.write("parent gone")


MARKER = "main-module-global"


def semantics(ctx):
    os.environ["ZYG_SET_BEFORE_SPAWN"] = "yes"
    os.environ.pop("ZYG_REMOVED_BEFORE_SPAWN", None)
    os.umask(0o027)
    os.chdir(os.environ["ZYG_CWD"])
    sys.path.append("/zyg/added/before/spawn")
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.signal(signal.SIGUSR2, lambda *a: None)
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGWINCH])
    extra = os.dup2(os.open("/dev/null", os.O_RDONLY), 50)  # inheritable, but spawn
    # passes only what it must
    out = {}
    for i in range(2):
        r, w = ctx.Pipe(duplex=False)
        p = ctx.Process(target=report, args=(w, extra), name=f"reporter-{i}")
        p.start()
        w.close()
        seen = r.recv()
        p.join()
        seen["exitcode"] = p.exitcode
        out[f"child{i}"] = seen
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGWINCH])
    out["parent_random_differs"] = out["child0"]["random"] != out["child1"]["random"]
    out["children_random_differ"] = out["child0"]["random"] != out["child1"]["random"]
    if "torch_rand" in out["child0"]:
        out["children_torch_differ"] = out["child0"]["torch_rand"] != out["child1"]["torch_rand"]
    for i in range(2):
        for key in ("random", "torch_rand"):
            out[f"child{i}"].pop(key, None)
    return out


def exits(ctx):
    out = {}
    for how in ("return", "sys.exit(7)", "raise", "os._exit(3)", "SIGTERM self"):
        p = ctx.Process(target=exit_with, args=(how,))
        p.start()
        p.join()
        out[how] = p.exitcode
    for action in ("terminate", "kill"):
        p = ctx.Process(target=exit_with, args=("sleep",))
        p.start()
        alive = p.is_alive()
        from multiprocessing.connection import wait

        ready_before = bool(wait([p.sentinel], timeout=0.2))
        getattr(p, action)()
        p.join(10)
        out[action] = {"alive_before": alive, "sentinel_before": ready_before,
                       "exitcode": p.exitcode, "alive_after": p.is_alive(),
                       "sentinel_after": bool(wait([p.sentinel], timeout=1))}
    p = ctx.Process(target=exit_with, args=("sleep",))
    p.start()
    os.kill(p.pid, signal.SIGKILL)  # what the parent holds is the real child
    p.join(10)
    out["SIGKILL of pid"] = p.exitcode
    return out


def parent_death(ctx):
    p = ctx.Process(target=wait_for_parent_death, args=(os.environ["ZYG_FLAG"],))
    p.start()
    time.sleep(0.5)
    print(json.dumps({"child": p.pid}), flush=True)
    os._exit(0)  # the child must notice


def main():
    scenario = sys.argv[1]
    ctx = mp.get_context("spawn")
    result = {"semantics": semantics, "exits": exits, "parent_death": parent_death}[scenario](ctx)
    print(json.dumps(result, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
