# A single-node Slurm for the tests, from Debian's packages: slurmctld and slurmd on
# localhost, as root, with their own config, state and logs in a temp folder and ports
# picked free, so they touch no system Slurm and nothing else on the machine. Auth is
# auth/none (Slurm 22.05 still ships it): no munge daemon to start. Sourced.
#   slurm_start DIR   starts both and waits (at most 30 s) until the node is idle;
#                     exports SLURM_CONF. slurm_stop cancels what is left and stops
#                     both (run it from a trap).

# free_port: a TCP port nothing listens on, with the next one free too (slurmd's).
free_port() {
  local port
  for _ in $(seq 50); do
    port=$((20000 + RANDOM % 20000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && ! (exec 3<>"/dev/tcp/127.0.0.1/$((port + 1))") 2>/dev/null; then
      echo "$port"; return 0
    fi
  done
  return 1
}

slurm_start() {
  SLURM_DIR="$1"
  mkdir -p "$SLURM_DIR/state" "$SLURM_DIR/spool"
  local port cpus
  port=$(free_port) || { echo "slurm_start: no free port" >&2; return 1; }
  cpus=$(nproc)
  cat >"$SLURM_DIR/slurm.conf" <<CONF
ClusterName=fusecheck-test
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
AuthType=auth/none
CredType=cred/none
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$SLURM_DIR/state
SlurmdSpoolDir=$SLURM_DIR/spool
SlurmctldPidFile=$SLURM_DIR/slurmctld.pid
SlurmdPidFile=$SLURM_DIR/slurmd.pid
SlurmctldLogFile=$SLURM_DIR/slurmctld.log
SlurmdLogFile=$SLURM_DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=fctest-node NodeHostname=$(hostname -s) NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=fctest Nodes=fctest-node Default=YES MaxTime=INFINITE State=UP
CONF
  export SLURM_CONF="$SLURM_DIR/slurm.conf"
  slurmctld -i >"$SLURM_DIR/slurmctld.out" 2>&1 || { cat "$SLURM_DIR/slurmctld.out" >&2; return 1; }
  slurmd -N fctest-node >"$SLURM_DIR/slurmd.out" 2>&1 || { cat "$SLURM_DIR/slurmd.out" >&2; return 1; }
  local deadline=$((SECONDS + 30))
  until [ "$(sinfo -h -n fctest-node -o %t 2>/dev/null)" = idle ]; do
    if [ $SECONDS -ge $deadline ]; then
      echo "slurm_start: the node did not come up in 30 s; logs:" >&2
      tail -n 20 "$SLURM_DIR/slurmctld.log" "$SLURM_DIR/slurmd.log" >&2
      return 1
    fi
    sleep 0.5
  done
}

slurm_stop() {
  [ -n "${SLURM_DIR:-}" ] || return 0
  local f pid
  # Jobs first, so that no task outlives the test.
  scancel -p fctest 2>/dev/null || true
  for _ in $(seq 25); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.2; done
  for f in slurmd slurmctld; do
    pid=$(cat "$SLURM_DIR/$f.pid" 2>/dev/null) || continue
    kill "$pid" 2>/dev/null || continue
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  done
  return 0
}
