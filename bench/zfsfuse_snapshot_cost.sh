#!/bin/sh
# Does a zfs-fuse snapshot (and a property write, and one dataset's listing) cost
# more as the pool holds more snapshots? Run inside a node of a 1-node lab:
#   zflock lab up --name snapx --nodes 1
#   zflock lab exec --name snapx node1 -- env N=300 ROUNDS=40 sh bench/zfsfuse_snapshot_cost.sh
#   zflock lab down --name snapx
# Each round snapshots N datasets once (N more snapshots in the pool), then sets a
# property on one dataset and lists that dataset's snapshots (`zfs get -r`).
# Results: docs/benchmarks.md ("Continuous replication at scale", stop 25).
set -e
N=${N:-300}; ROUNDS=${ROUNDS:-40}
zfs create -o mountpoint=none tank/x
i=0; while [ $i -lt $N ]; do zfs create tank/x/d$i; i=$((i+1)); done
r=1
echo "round snapshots_in_pool round_s per_snapshot_ms set_ms get_one_ms"
while [ $r -le $ROUNDS ]; do
  t0=$(date +%s.%N)
  i=0; while [ $i -lt $N ]; do zfs snapshot tank/x/d$i@s$r; i=$((i+1)); done
  t1=$(date +%s.%N)
  zfs set zflock:probe=$r tank/x/d7
  t2=$(date +%s.%N)
  zfs get -H -p -r -o name,value guid tank/x/d7 > /dev/null
  t3=$(date +%s.%N)
  echo "$r $((r*N)) $t0 $t1 $t2 $t3" | awk -v n=$N '{printf "%d %d %.2f %.1f %.1f %.1f\n", $1, $2, $4-$3, ($4-$3)*1000/n, ($5-$4)*1000, ($6-$5)*1000}'
  r=$((r+1))
done
