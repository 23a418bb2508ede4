"""bench/proc_cpu.py's context switch count: every live thread of a process, read from /proc."""

import math
import os
import subprocess
import sys
import threading
import time

from bench import proc_cpu


def test_switches_of_another_thread_are_counted():
    me = {"me": os.getpid()}
    slept, done = threading.Event(), threading.Event()

    def sleeper():  # each sleep is a voluntary switch of this thread, not of the main one
        for _ in range(20):
            time.sleep(0.001)
        slept.set()
        done.wait()  # alive while counted: an ended thread leaves /proc/<pid>/task

    before = proc_cpu.context_switches(me)["me"]
    t = threading.Thread(target=sleeper)
    t.start()
    slept.wait()
    during = proc_cpu.context_switches(me)["me"]
    done.set()
    t.join()
    assert during - before >= 20


def test_a_process_that_ended_reads_as_nan():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert math.isnan(proc_cpu.context_switches({"gone": child.pid})["gone"])
