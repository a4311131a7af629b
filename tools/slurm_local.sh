#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for trying the slurm executor and for CI (Debian 12,
# Slurm 22.05). Needs root; no systemd. Usage:
#   tools/slurm_local.sh start   installs slurm-wlm and munge if missing, starts munged, slurmctld
#                                and slurmd, and waits until the node is idle
#   tools/slurm_local.sh stop    stops the three daemons started by `start`
set -euo pipefail
state=/run/scssl-slurm  # pid files of the daemons started here
host=$(hostname)

start() {
  if ! command -v slurmctld > /dev/null || ! command -v munged > /dev/null; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends slurm-wlm munge
  fi
  mkdir -p "$state" /etc/munge /var/log/munge /run/munge /var/lib/munge \
    /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /etc/slurm
  if [[ ! -s /etc/munge/munge.key ]]; then
    head -c 1024 /dev/urandom > /etc/munge/munge.key
  fi
  chown -R munge: /etc/munge /var/log/munge /run/munge /var/lib/munge
  chmod 400 /etc/munge/munge.key
  if ! munge -n 2> /dev/null | unmunge > /dev/null 2>&1; then
    munged --force
    echo $(pgrep -n munged) > "$state/munged.pid"
  fi
  local cpus memory
  cpus=$(nproc)
  memory=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 8 / 10 ))
  cat > /etc/slurm/slurm.conf <<EOF
# Written by scssl-bench tools/slurm_local.sh: a one-node cluster for tests.
ClusterName=local
SlurmctldHost=$host
AuthType=auth/munge
SlurmUser=root
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=$host CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  if ! pgrep -x slurmctld > /dev/null; then
    slurmctld -c
    sleep 1
    echo $(pgrep -n -x slurmctld) > "$state/slurmctld.pid"
  fi
  if ! pgrep -x slurmd > /dev/null; then
    slurmd -c
    sleep 1
    echo $(pgrep -n -x slurmd) > "$state/slurmd.pid"
  fi
  for _ in $(seq 60); do
    if timeout 10 sinfo -h -o %t 2> /dev/null | grep -qx idle; then
      echo "Slurm is up: node $host idle"
      return 0
    fi
    sleep 1
  done
  echo "Slurm did not come up; see /var/log/slurm/" >&2
  return 1
}

stop() {
  for daemon in slurmd slurmctld munged; do
    if [[ -f $state/$daemon.pid ]]; then
      local pid
      pid=$(cat "$state/$daemon.pid")
      kill "$pid" 2> /dev/null || true
      # Gone before returning: a `start` right after must not mistake it for a running daemon.
      for _ in $(seq 50); do kill -0 "$pid" 2> /dev/null || break; sleep 0.2; done
      rm -f "$state/$daemon.pid"
    fi
  done
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
