"""The replay helper yields the CPU to its target for real: nice 10 for its threads and,
since it runs in a session of its own (hence an autogroup of its own, which is what the
scheduler weighs against the target's), nice 10 for that autogroup too; a helper that
shares the target's session leaves the session's autogroup alone."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/autogroup"),
                                reason="kernel without autogroups")

# /proc/self/autogroup reads empty for a task of the default autogroup (a session that never
# called setsid, e.g. under a container's or CI runner's init): "" stands for that group.
CHILD = r"""
import os, sys
from headstart.profiles.replay_helper import _lower_cpu_priority

def group():
    with open("/proc/self/autogroup") as fh:
        return (fh.read().split() or ["", "", ""])

target = os.getppid()
if sys.argv[1] == "own-session":
    os.setsid()
before = group()
_lower_cpu_priority(target)
after = group()
print(os.getpriority(os.PRIO_PROCESS, 0), before[0] == after[0], repr(after[-1]))
"""


def _child(mode: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True,
                         timeout=60, check=True)
    return out.stdout.split()


def _group_nice() -> str:
    with open("/proc/self/autogroup") as fh:
        return repr((fh.read().split() or [""])[-1])


# os.nice is relative: 10 below whatever the target runs at
EXPECTED = str(min(19, os.getpriority(os.PRIO_PROCESS, 0) + 10))


def test_own_session_gets_its_autogroup_niced() -> None:
    mine = _group_nice()
    nice, same_group, group_nice = _child("own-session")
    assert nice == EXPECTED and same_group == "True" and group_nice == "'10'"
    assert _group_nice() == mine  # ours untouched


def test_shared_session_leaves_the_autogroup_alone() -> None:
    mine = _group_nice()
    nice, _same, group_nice = _child("shared")
    assert nice == EXPECTED and group_nice == mine
