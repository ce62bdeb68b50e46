#!/usr/bin/env bash
# Where an idle exporter's CPU goes, from the live process: `perf record` on the sampler
# and scanner threads of the release build at default flags (or the flags given after
# SECONDS) for SECONDS, then every sample is put in one class by its call chain:
#
#   kernel reads   under a system call that reads the kernel's state (netlink send and
#                  receive, pread/read of proc files, open, stat, getdents, prlimit, setns)
#   sleep and wake under futex/nanosleep, the scheduler, or the timer interrupt: what a
#                  thread pays to sleep and be woken, whatever it does in between
#   user           the exporter's own code (parsing, labels, peaks, the snapshot)
#   other kernel   the rest (page faults, other system calls)
#
# and the ratio (everything but sleep and wake) / kernel reads is printed: the bookkeeping
# around the reads, issue 18's goal 7. Perf's own interrupts inflate every class alike.
#
# Usage, as root: scripts/profile-tick.sh [SECONDS=60] [exporter flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_MEASURED=${1:-60}
shift $(( $# > 0 ? 1 : 0 ))
command -v perf >/dev/null || { echo "apt-get install linux-perf" >&2; exit 1; }
cargo build --release --quiet
OUT=$(mktemp -d)
target/release/netpressure_exporter --web.listen-address 127.0.0.1:19863 --log.level=warn "$@" &
EXP=$!
trap 'kill $EXP 2>/dev/null || true; rm -rf "$OUT"' EXIT
# The first rounds open every file and socket; the steady state is what is measured.
sleep 10
tids=$(for t in /proc/$EXP/task/*; do
  case "$(cat "$t/comm")" in sampler|scanner) basename "$t" ;; esac
done | paste -sd,)
perf record -q -g -F 10000 --tid="$tids" -o "$OUT/perf.data" -- sleep "$SECONDS_MEASURED" 2>/dev/null
perf script -i "$OUT/perf.data" -F comm,ip,sym,dso 2>/dev/null | python3 -c '
import sys
READS = {"__x64_sys_sendto", "__x64_sys_recvfrom", "__x64_sys_sendmsg", "__x64_sys_recvmsg",
         "__x64_sys_pread64", "__x64_sys_read", "__x64_sys_openat", "__x64_sys_close",
         "__x64_sys_statx", "__x64_sys_newfstatat", "__x64_sys_getdents64",
         "__x64_sys_prlimit64", "__x64_sys_readlinkat", "__x64_sys_setns"}
WAKE = {"__x64_sys_futex", "__x64_sys_clock_nanosleep", "__x64_sys_nanosleep", "schedule",
        "__schedule", "finish_task_switch.isra.0", "asm_sysvec_apic_timer_interrupt",
        "exit_to_user_mode_loop", "__rseq_handle_notify_resume", "syscall_exit_to_user_mode",
        "irqentry_exit_to_user_mode"}
classes = {}
by_thread = {}
def flush(comm, frames):
    if not frames:
        return
    syms = [s for s, _ in frames]
    if any(s in READS for s in syms):
        c = "kernel reads"
    elif any(s in WAKE for s in syms):
        c = "sleep and wake"
    elif "kernel.kallsyms" not in frames[0][1]:
        c = "user"
    else:
        c = "other kernel"
    classes[c] = classes.get(c, 0) + 1
    by_thread.setdefault(comm, {}).setdefault(c, 0)
    by_thread[comm][c] += 1
comm, frames = None, []
for line in sys.stdin:
    if not line.strip():
        flush(comm, frames); comm, frames = None, []
    elif not line.startswith((" ", "\t")):
        flush(comm, frames); comm, frames = line.split()[0], []
    else:
        parts = line.split(None, 1)
        rest = parts[1] if len(parts) > 1 else ""
        sym = rest.rsplit(" (", 1)[0].split("+0x")[0].strip()
        dso = rest.rsplit(" (", 1)[1] if " (" in rest else ""
        frames.append((sym, dso))
flush(comm, frames)
total = sum(classes.values())
order = ["kernel reads", "user", "other kernel", "sleep and wake"]
print(f"{total} samples of the sampler and scanner threads")
for thread, cs in sorted(by_thread.items()):
    n = sum(cs.values())
    print(f"  {thread}: " + ", ".join(f"{c} {cs.get(c, 0) * 100 / n:.0f} %" for c in order))
for c in order:
    print(f"{c:16} {classes.get(c, 0) * 100 / max(total, 1):5.1f} %")
reads = classes.get("kernel reads", 0)
work = total - classes.get("sleep and wake", 0)
print(f"(everything but sleep and wake) / kernel reads: {work / max(reads, 1):.2f}")
print(f"everything / kernel reads: {total / max(reads, 1):.2f}")
'
