#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, to try cluster sweeps locally and for the tests
# (Debian/Ubuntu, as root; Debian's slurm 22.05 packages).
#   bash scripts/slurm_local.sh start [DIR]   # installs the packages if missing, starts munged, slurmctld and
#                                             # slurmd, waits for the node to be idle, prints `export SLURM_CONF=...`
#   bash scripts/slurm_local.sh stop [DIR]    # cancels its jobs, stops the daemons
# One node named after this host with all its CPUs and its memory less 1 GiB, one partition `local`; no
# accounting database, so `sacct` is disabled as on some real clusters; SLURM's ports, or the next free ones, so
# that several such clusters (a user's, the tests') can run at once. Everything (config, state, spool, logs)
# lives under DIR (default /tmp/vla-pruner-slurm); nothing in /etc changes except munge's key, which the munge
# package creates. SLURM_KILL_WAIT (default 30, as SLURM's) is the seconds between SIGTERM and SIGKILL at a time
# limit or `scancel`.
set -euo pipefail
usage="usage: slurm_local.sh start|stop [DIR]"
action=${1:?$usage}
dir=$(realpath -m "${2:-/tmp/vla-pruner-slurm}")
conf=$dir/slurm.conf
daemons=(slurmd slurmctld munged)  # stopped in this order

alive() { [ -f "$dir/$1.pid" ] && kill -0 "$(cat "$dir/$1.pid")" 2>/dev/null; }
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {  # from $1 up: SLURM's own ports if free, else the next ones (another cluster, e.g. the tests')
  local port=$1
  while listening "$port"; do port=$((port + 1)); done
  echo "$port"
}

stop() {
  if alive slurmctld; then  # cancel what still runs, so no job step outlives its slurmd
    SLURM_CONF=$conf scancel --full --quiet --user=root 2>/dev/null || true
    for _ in $(seq 30); do
      [ -z "$(SLURM_CONF=$conf squeue -h -o %A 2>/dev/null)" ] && break
      sleep 1
    done
  fi
  for name in "${daemons[@]}"; do
    alive "$name" || continue
    pid=$(cat "$dir/$name.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  done
  rm -f "$dir"/*.pid
}

case "$action" in
  stop) stop; exit 0 ;;
  start) ;;
  *) echo "$usage" >&2; exit 2 ;;
esac
[ "$(id -u)" = 0 ] || { echo "slurm_local.sh: needs root (it runs munged, slurmctld and slurmd)" >&2; exit 1; }
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
    || ! command -v munged >/dev/null; then
  command -v apt-get >/dev/null \
    || { echo "slurm_local.sh: slurm is not installed and there is no apt-get" >&2; exit 1; }
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge
fi
stop
host=$(hostname -s)
cpus=$(nproc)
mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
ctld_port=$(free_port 6817)
slurmd_port=$(free_port $((ctld_port + 1)))
mkdir -p "$dir/state" "$dir/spool" "$dir/munge"
chmod 755 "$dir"  # munged runs as the munge user and must reach its socket directory
cat > "$conf" <<CONF
ClusterName=local
SlurmctldHost=$host
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket.2
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
MpiDefault=none
ReturnToService=2
KillWait=${SLURM_KILL_WAIT:-30}
SchedulerType=sched/backfill
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
[ -s /etc/munge/munge.key ] || mungekey --create 2>/dev/null \
  || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 2>/dev/null
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
chown munge:munge "$dir/munge"
runuser -u munge -- munged --socket="$dir/munge/munge.socket.2" --pid-file="$dir/munge/munged.pid" \
  --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munged.seed"
cp "$dir/munge/munged.pid" "$dir/munged.pid"
export SLURM_CONF=$conf
slurmctld -c -f "$conf"  # -c: a clean start, no jobs from an earlier cluster in DIR
slurmd -f "$conf"
state=
for _ in $(seq 60); do
  state=$(sinfo -h -o %t 2>/dev/null || true)
  [ "$state" = idle ] && { echo "export SLURM_CONF=$conf"; exit 0; }
  sleep 1
done
echo "slurm_local.sh: the node did not become idle (state: '${state:-none}'); logs in $dir" >&2
exit 1
