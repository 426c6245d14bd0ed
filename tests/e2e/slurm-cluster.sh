# shellcheck shell=bash
# slurm-cluster.sh - sourced by the Slurm tests after common.sh: starts a private one-node
# Slurm cluster under $WORK and stops it again on exit (the EXIT trap replaces common.sh's).
#  - munged with its own key, socket, pid and log files under $WORK/munge (the system's munge,
#    if any, is not touched); slurmctld and slurmd as root in the foreground (-D), so the
#    test knows their PIDs; config, state, spool and logs under $WORK; all on 127.0.0.1,
#    on ports of their own (SlurmctldPort 20000-39999, SlurmdPort one above).
#  - AuthInfo=cred_expire=5 and SchedulerParameters=sched_interval=2: a requeued job reruns
#    about 7 s later instead of 2-3 minutes.
#  - teardown: scancel the jobs in $jobs_submitted, then TERM (later KILL) slurmd, slurmctld
#    and munged by PID, newest first. KEEP_WORK=1 keeps $WORK for a post-mortem.
# Calls skip (exit 77) when not root, a program is missing or the daemons do not come up.
# Afterwards SLURM_CONF is exported and $node names the node.
[ "$(id -u)" = 0 ] || skip "needs root: slurmd runs as root in this test"
for b in munged mungekey munge unmunge slurmctld slurmd sbatch srun scontrol squeue scancel sinfo; do
    command -v "$b" >/dev/null || skip "$b missing (apt-get install slurm-wlm munge)"
done
started=()      # PIDs of the daemons this test started, stopped in reverse order
jobs_submitted=()
teardown() {
    set +e
    if [ ${#jobs_submitted[@]} -gt 0 ]; then
        scancel "${jobs_submitted[@]}" 2>/dev/null
        for _ in $(seq 100); do [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 0.2; done
    fi
    local i p
    for ((i = ${#started[@]} - 1; i >= 0; i--)); do
        p=${started[$i]}
        kill -TERM "$p" 2>/dev/null || continue
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null
    done
    if [ -n "${KEEP_WORK:-}" ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap teardown EXIT

chmod 711 "$WORK"                     # munged wants every directory above its socket searchable
M=$WORK/munge
mkdir -p "$M" "$WORK"/{etc,state,spool,log,run}
chmod 755 "$M"
mungekey --create --keyfile="$M/munge.key" >/dev/null 2>&1 || skip "mungekey failed"
chmod 400 "$M/munge.key"
munged -F -S "$M/sock" --key-file="$M/munge.key" --pid-file="$M/munged.pid" \
    --log-file="$M/munged.log" --seed-file="$M/seed" >/dev/null 2>&1 &
started+=($!)
for _ in $(seq 50); do munge -S "$M/sock" -n 2>/dev/null | unmunge -S "$M/sock" >/dev/null 2>&1 && break; sleep 0.1; done
munge -S "$M/sock" -n 2>/dev/null | unmunge -S "$M/sock" >/dev/null 2>&1 || { cat "$M/munged.log" >&2; skip "munged did not start"; }

node_line=$(slurmd -C 2>/dev/null | head -n 1)
node=${node_line#NodeName=}; node=${node%% *}
[ -n "$node" ] || skip "slurmd -C does not describe this node"
port=$((20000 + RANDOM % 20000))
export SLURM_CONF=$WORK/etc/slurm.conf
cat >"$SLURM_CONF" <<EOF
ClusterName=slmtest
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# the private munged; cred_expire is also how long a requeued job waits (minimum 5)
AuthInfo=socket=$M/sock,cred_expire=5
StateSaveLocation=$WORK/state
SlurmdSpoolDir=$WORK/spool
SlurmctldPidFile=$WORK/run/slurmctld.pid
SlurmdPidFile=$WORK/run/slurmd.pid
SlurmctldLogFile=$WORK/log/slurmctld.log
SlurmdLogFile=$WORK/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
MpiDefault=pmix
ReturnToService=2
JobRequeue=1
KillWait=10
MinJobAge=300
InactiveLimit=0
MailProg=/bin/true
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
$node_line NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
slurmctld -D -f "$SLURM_CONF" >"$WORK/log/slurmctld.stderr" 2>&1 &
started+=($!)
slurmd -D -f "$SLURM_CONF" >"$WORK/log/slurmd.stderr" 2>&1 &
started+=($!)
up=
for _ in $(seq 100); do
    [ "$(sinfo -h -n "$node" -o %T 2>/dev/null)" = idle ] && { up=1; break; }
    sleep 0.1
done
if [ -z "$up" ]; then
    tail -n 20 "$WORK"/log/* >&2
    skip "slurmctld/slurmd did not come up (logs above)"
fi
srun --mpi=list 2>&1 | grep -q pmix || skip "Slurm has no pmix plugin (slurm-wlm-basic-plugins)"
echo "slurm up on $node, port $port"

