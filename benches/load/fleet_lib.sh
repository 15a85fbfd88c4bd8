# Sourced after lib.sh by fleet_idle.sh and fleet_scale.sh:
#
#   start_etcd DIR                 one etcd on free loopback ports: ETCD_URL, ETCD_PID
#   start_replica DIR NAME GROUP   a grayshift (GRAYSHIFT) of fleet_replica.toml:
#                                  REPLICA_PID, REPLICA_ADMIN (its admin URL)
#   ticks PID                      utime + stime, in CLK_TCK ticks
#   etcd_metric NAME               a value from etcd's /metrics

start_etcd() {
    local dir=$1 client peer
    client=$(free_port)
    peer=$(free_port)
    ETCD_URL="http://127.0.0.1:$client"
    "${ETCD_BIN:-etcd}" --name fleet --data-dir "$dir/etcd" \
        --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
        --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
        --initial-cluster "fleet=http://127.0.0.1:$peer" >"$dir/etcd.log" 2>&1 &
    ETCD_PID=$!
    PIDS+=("$ETCD_PID")
    wait_port "$client" etcd
}

DEAD_PORT=$(free_port)

start_replica() {
    local dir=$1 name=$2 group=$3 admin
    mkdir -p "$dir"
    admin=$(free_port)
    render "$LOAD/fleet_replica.toml" "$dir/grayshift.toml" LISTEN="$(free_port)" ADMIN="$admin" \
        DEAD="$DEAD_PORT" DIR="$dir" GROUP="$group" ETCD="$ETCD_URL" REPLICA="$name"
    GRAYSHIFT_LOG=warn "$GRAYSHIFT" run --config "$dir/grayshift.toml" >"$dir/log" 2>&1 &
    REPLICA_PID=$!
    PIDS+=("$REPLICA_PID")
    REPLICA_ADMIN="http://127.0.0.1:$admin"
}

ticks() { cpu_ticks "$1" | awk '{print $1 + $2}'; }

etcd_metric() { curl -s "$ETCD_URL/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
