"""What SLURM says of a sweep's jobs: their states from accounting (sacct), and why the pending
ones wait (squeue).

A job array's tasks that have not started have no accounting record of their own: the array's
own record stands for them, written `19_[0-3%2]` (the tasks it still covers) or, on some
clusters, `19` alone. A pending array cancelled with scancel is recorded there only, as
CANCELLED, so that record gives the state of every task it covers that has no record of its
own.

Some pending reasons resolve as the cluster's other jobs end (Resources, Priority,
JobArrayTaskLimit, QOSMaxJobsPerUserLimit...); others never do, because the job asks for more
than the partition, its QOS or its account allow, and SLURM (whose EnforcePartLimits is off by
default) keeps such a job pending for ever: STUCK_REASONS.
"""
import re
import subprocess

SLURM_TIMEOUT_S = 60
# Pending reasons no wait resolves: the job asks for what its partition, QOS or account never
# gives, or for nodes that stay unavailable without an administrator.
STUCK_REASONS = frozenset({
    "PartitionConfig", "PartitionTimeLimit", "PartitionNodeLimit", "ReqNodeNotAvail",
    "InvalidQOS", "InvalidAccount", "BadConstraints", "DependencyNeverSatisfied"})
# Limits of a QOS or an association (QOSMaxCpuPerJobLimit, AssocMaxWallDurationPerJobLimit,
# QOSMaxMemoryPerJob...): stuck when the limit is per job; a per-user or per-account one
# (QOSMaxJobsPerUserLimit, AssocMaxJobsLimit) resolves as the user's other jobs end.
STUCK_PREFIXES = ("QOSMax", "AssocMax")
PER_JOB = "PerJob"
ARRAY_RECORD = re.compile(r"(\d+)_\[([^\]]*)\]")      # 19_[0-3%2], 19_[1,4-6]


def slurm_lines(command):
    """The lines a SLURM command prints, or None where it fails (not answering, unknown ids)."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=SLURM_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.splitlines() if done.returncode == 0 else None


def array_of(job_id):
    """The id SLURM knows a job's array by (19 for 19_3), or the job's own id."""
    return job_id.split("_")[0]


def task_indices(ranges):
    """The task indices of `0-3%2`, `1,4-6`, `7`: the array's own record covers these."""
    indices = set()
    for part in ranges.split("%")[0].split(","):
        first, _, last = part.partition("-")
        if first.isdigit():
            indices.update(range(int(first), int(last or first) + 1))
    return indices


def states_from_sacct(lines, job_ids):
    """{job id: state} from `sacct -X -n -P -o JobID,State` lines: a task's own record, else
    the record of its array that covers it (`19_[0-3]`, or `19` alone, which covers every task
    without a record of its own). Ids accounting does not know yet are left out."""
    own, ranges = {}, {}
    for line in lines:
        record_id, _, state = line.partition("|")
        state = state.split(" ")[0]           # "CANCELLED by 0"
        if not state:
            continue
        array = ARRAY_RECORD.fullmatch(record_id)
        if array:
            ranges.setdefault(array.group(1), []).append((task_indices(array.group(2)), state))
        else:
            own[record_id] = state
    states = {}
    for job_id in job_ids:
        array, _, task = job_id.partition("_")
        covering = [s for indices, s in ranges.get(array, ()) if task.isdigit() and int(task) in indices]
        state = own.get(job_id) or next(iter(covering), None) or (own.get(array) if task else None)
        if state:
            states[job_id] = state
    return states


def job_states(job_ids):
    """{job id: SLURM state} for the jobs accounting knows, from one sacct call; {} where sacct
    does not answer (the states stay as last recorded)."""
    if not job_ids:
        return {}
    arrays = sorted({array_of(j) for j in job_ids})
    lines = slurm_lines(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(arrays)])
    return states_from_sacct(lines or [], job_ids)


def pending_reasons(job_ids):
    """{job id: why it waits} for those of the jobs pending in SLURM's queue, from one squeue
    call (array tasks one by one); {} where squeue does not answer."""
    if not job_ids:
        return {}
    arrays = sorted({array_of(j) for j in job_ids})
    lines = slurm_lines(["squeue", "-h", "-r", "-t", "PENDING", "-o", "%i|%r", "-j", ",".join(arrays)])
    wanted = set(job_ids)
    reasons = {}
    for line in lines or []:
        job_id, _, reason = line.partition("|")
        if job_id in wanted:
            reasons[job_id] = reason.strip()
    return reasons


def cannot_resolve(reason):
    """Whether a pending reason is one no wait resolves (`ReqNodeNotAvail, UnavailableNodes:n1`
    is read by its code, before the comma)."""
    code = reason.split(",")[0].strip()
    return code in STUCK_REASONS or (code.startswith(STUCK_PREFIXES) and PER_JOB in code)
