#!/usr/bin/env python3
"""How long a wake-up takes, by how long its target had been asleep.

Runs COMMAND with the kernel's scheduler tracepoints on (ftrace; needs root), then, for every
wake-up of a task that had gone to sleep, prints how long the task had been asleep when the wake-up
was sent and how long it then took to run, grouped in 5 us steps, for each task name (threads
named alike, such as a sidecar's workers, count together):

    sudo scripts/wake_latency.py -- build/dev/bench/sidecar-bench --model tiny.pt --shape 1x64

or reads a saved trace (`cat /sys/kernel/tracing/trace > FILE`) with --trace FILE.
docs/latency.md has what this showed on the project's machines.
"""
import argparse
import collections
import re
import subprocess
import sys

TRACING = "/sys/kernel/tracing"
# The end of a system call marks a woken task running as well as its switch-in does: some guests
# trace no switch out of the idle task.
EVENTS = ["sched:sched_waking", "sched:sched_switch", "raw_syscalls:sys_exit"]
LINE = re.compile(r"^\s*(.+)-(\d+)\s+\[(\d+)\]\s+\S+\s+([\d.]+): (\w+): (.*)")


def write(path, text):
    with open(f"{TRACING}/{path}", "w") as f:
        f.write(text)


def traced(command):
    write("tracing_on", "0")
    write("trace_clock", "global")  # one clock for every CPU: wakes cross CPUs
    write("buffer_size_kb", "16384")
    write("set_event", "\n".join(EVENTS) + "\n")
    write("trace", "")
    write("tracing_on", "1")
    try:
        subprocess.run(command, check=False)
    finally:
        write("tracing_on", "0")
        write("set_event", "")
    with open(f"{TRACING}/trace") as f:
        return f.read()


def wake_ups(trace):
    """(task name, asleep_us, latency_us) for each wake-up of a task whose sleep began in the trace."""
    slept_at = {}   # pid -> when it switched out
    woken_at = {}   # pid -> first wake-up not yet followed by it running
    names = {}

    def running(pid, when):
        woken = woken_at.pop(pid, None)
        if woken is not None and pid in slept_at and slept_at[pid] <= woken:
            return names.get(pid, str(pid)), (woken - slept_at[pid]) * 1e6, (when - woken) * 1e6
        return None

    for line in trace.splitlines():
        match = LINE.search(line)
        if not match:
            continue
        current = int(match.group(2))
        when, event, fields = float(match.group(4)), match.group(5), match.group(6)
        if event == "sched_switch":
            prev = int(re.search(r"prev_pid=(\d+)", fields).group(1))
            runs = int(re.search(r"next_pid=(\d+)", fields).group(1))
            names[runs] = re.search(r"next_comm=(.*?) next_pid=", fields).group(1)
            if prev != 0:
                names[prev] = re.search(r"prev_comm=(.*?) prev_pid=", fields).group(1)
                slept_at[prev] = when
            found = running(runs, when)
        elif event == "sched_waking":
            woken_at.setdefault(int(re.search(r"pid=(\d+)", fields).group(1)), when)
            found = running(current, when)
        else:
            found = running(current, when)
        if found:
            yield found


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trace", help="a saved ftrace text file instead of running a command")
    parser.add_argument("--min-wake-ups", type=int, default=1000, help="leave out tasks woken fewer times")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if args.trace:
        with open(args.trace) as f:
            trace = f.read()
    elif command:
        trace = traced(command)
    else:
        parser.error("give a COMMAND to trace, or --trace FILE")
    groups = collections.defaultdict(lambda: collections.defaultdict(list))
    for name, asleep, latency in wake_ups(trace):
        groups[name][min(int(asleep // 5) * 5, 100)].append(latency)
    for name in sorted(groups, key=lambda n: -sum(len(v) for v in groups[n].values())):
        if sum(len(v) for v in groups[name].values()) < args.min_wake_ups:
            continue
        print(f"\n{name}\n  asleep for (us)   wake-ups   took to run, p50 (us)")
        for start in sorted(groups[name]):
            latencies = sorted(groups[name][start])
            label = f"{start}-{start + 5}" if start < 100 else "100+"
            print(f"  {label:>15}   {len(latencies):8d}   {latencies[len(latencies) // 2]:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
