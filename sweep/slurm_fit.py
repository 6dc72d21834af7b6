"""Whether a partition can run a sweep's jobs at all: what each job asks (--slurm-cpus-per-run,
--slurm-mem, --slurm-gpus-per-run, --slurm-time) against the partition's limits (scontrol show
partition) and its nodes (scontrol show node). SLURM accepts a job that no node can run whenever
EnforcePartLimits is off, its default, and leaves it pending for ever (reason PartitionConfig,
PartitionTimeLimit...): such a request is refused here before anything is submitted, naming the
flag and the largest value the partition allows.
"""
import math
import re
from dataclasses import dataclass

from sweep.slurm_queue import slurm_lines
from utils import UserError

MB_PER_GB = 1024          # --slurm-mem N becomes sbatch --mem=NGB (or N*1024 MB): SLURM's G is 1024 MB
NO_LIMIT = {"UNLIMITED", "INFINITE", "NONE", "N/A", "(null)"}
GPU = "gpu"


@dataclass(frozen=True)
class Node:
    """What one node of the partition offers a job."""
    name: str
    cpus: int
    mem_mb: int
    gpus: int


@dataclass(frozen=True)
class Partition:
    """A partition's limits on one job (None: no limit) and its nodes."""
    name: str
    max_minutes: int
    max_cpus_per_node: int
    max_mem_mb: int
    nodes: tuple


def fields(line):
    """KEY=VALUE pairs of one `scontrol show ... --oneliner` line."""
    return dict(re.findall(r"(\w+)=(\S*)", line))


def limit(value):
    """A limit of scontrol's as a number, None where there is none."""
    return None if value is None or value.upper() in NO_LIMIT else int(value)


def minutes(value):
    """scontrol's [D-]HH:MM:SS, MM:SS or MM (UNLIMITED: None) in whole minutes."""
    if value is None or value.upper() in NO_LIMIT:
        return None
    days, _, clock = value.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    if len(parts) == 1:
        return int(days or 0) * 24 * 60 + parts[0]
    seconds = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
    return int(days or 0) * 24 * 60 + seconds // 60


def gpu_count(gres):
    """The GPUs of a node's Gres: gpu:4, gpu:a100:2(S:0-1),gpu:v100:2, (null)."""
    total = 0
    for item in re.sub(r"\([^)]*\)", "", gres).split(","):
        parts = item.split(":")
        if parts[0] == GPU:
            total += int(parts[-1]) if len(parts) > 1 and parts[-1].isdigit() else 1
    return total


def node_from(f):
    """A Node from the fields of `scontrol show node`: its CPUs less those kept for the system
    (CPUEfctv), its memory less MemSpecLimit, its GPUs."""
    cpus = int(f.get("CPUEfctv") or f["CPUTot"])
    mem_mb = int(f.get("RealMemory", 0)) - (limit(f.get("MemSpecLimit")) or 0)
    return Node(f["NodeName"], cpus, mem_mb, gpu_count(f.get("Gres", "")))


def read_partition(name):
    """The partition `name` (None: the cluster's default), or None where SLURM does not know it
    (sbatch then refuses the job array with its own message)."""
    lines = slurm_lines(["scontrol", "show", "partition", "--oneliner"])
    parts = [fields(line) for line in lines or [] if line.strip()]
    found = [p for p in parts if (p.get("PartitionName") == name if name else p.get("Default") == "YES")]
    nodes = slurm_lines(["scontrol", "show", "node", "--oneliner"])
    if not found or nodes is None:
        return None
    p = found[0]
    members = [node_from(f) for f in map(fields, nodes)
               if p["PartitionName"] in f.get("Partitions", "").split(",")]
    return Partition(p["PartitionName"], minutes(p.get("MaxTime")), limit(p.get("MaxCPUsPerNode")),
                     limit(p.get("MaxMemPerNode")), tuple(members))


def usable(node, partition):
    """(CPUs, memory in MB, GPUs) a job may have of `node` in `partition`."""
    cpus = min(node.cpus, partition.max_cpus_per_node or node.cpus)
    mem_mb = min(node.mem_mb, partition.max_mem_mb or node.mem_mb)
    return cpus, mem_mb, node.gpus


def gb_text(mem_mb):
    """Memory as a --slurm-mem value that fits in it: GB, rounded down to a tenth."""
    return f"{math.floor(mem_mb / MB_PER_GB * 10) / 10:g} GB"


def above(flag, asked, node_most, cap, shown, p):
    """Why `asked` cannot be had, naming the smaller of what the partition's largest node has
    and the partition's cap on one node (None: no cap); None where it can."""
    if cap is not None and cap < node_most:
        return f"{flag}: partition {p.name} allows at most {shown(cap)} per node" if asked > cap else None
    return f"{flag}: no node of partition {p.name} has more than {shown(node_most)}" if asked > node_most else None


def refusal(o, partition):
    """The one-line reason no node of `partition` can run a job of SlurmOptions `o`, or None."""
    p = partition
    if not p.nodes:
        return f"--slurm-partition {p.name}: the partition has no nodes"
    if p.max_minutes is not None and o.minutes > p.max_minutes:
        return f"--slurm-time {o.minutes}: partition {p.name} allows at most {p.max_minutes} minutes"
    mem_asked = o.mem_gb * MB_PER_GB if o.mem_gb else 0
    most_gpus = max(n.gpus for n in p.nodes)
    why = (above(f"--slurm-cpus-per-run {o.cpus}", o.cpus, max(n.cpus for n in p.nodes),
                 p.max_cpus_per_node, lambda n: f"{n} CPUs", p) or
           above(f"--slurm-mem {o.mem_gb or 0:g}", mem_asked, max(n.mem_mb for n in p.nodes),
                 p.max_mem_mb, gb_text, p))
    if why:
        return why
    if o.gpus > most_gpus:
        return (f"--slurm-gpus-per-run {o.gpus}: no node of partition {p.name} has " +
                (f"more than {most_gpus} GPUs" if most_gpus else "a GPU"))
    offers = sorted({usable(n, p) for n in p.nodes}, reverse=True)
    if not any(o.cpus <= c and mem_asked <= m and o.gpus <= g for c, m, g in offers):
        return (f"--slurm-cpus-per-run {o.cpus}, --slurm-mem {o.mem_gb or 0:g}, --slurm-gpus-per-run "
                f"{o.gpus}: no node of partition {p.name} has them all at once; its nodes offer " +
                "; ".join(f"{c} CPUs, {gb_text(m)}, {g} GPUs" for c, m, g in offers))
    return None


def check_fits(o):
    """UserError where no node of the job's partition can run the job SlurmOptions `o` asks for."""
    partition = read_partition(o.partition)
    why = partition and refusal(o, partition)
    if why:
        raise UserError(why)
