# The lab's scenario language: shell functions every command from the host can call.
# Targets are nvmet subsystems backed by null_blk devices; hosts connect through /dev/nvme-fabrics.
# Sourced by the command loop in init.sh before each command; defines functions only.

CFG=/sys/kernel/config/nvmet
NQN_PREFIX=nqn.2026-11.io.nvmeof-exporter.lab
# Soft-RoCE runs on one end of a veth pair; the address is a documentation address (RFC 5737)
# that exists only inside this VM, where target and host both use it.
RDMA_ADDR=192.0.2.1
# fcloop world wide names: one local (host) port, one target port.
FC_HOST_WWNN=0x10000000000000a1
FC_HOST_WWPN=0x20000000000000a1
FC_TGT_WWNN=0x10000000000000b1
FC_TGT_WWPN=0x20000000000000b1
AGENT_PORT=9856

nqn() { echo "$NQN_PREFIX:$1"; }

# subsys NAME NULLB: a subsystem with namespace 1 on /dev/NULLB, open to any host.
subsys() {
    s="$CFG/subsystems/$(nqn "$1")"
    mkdir -p "$s" || return 1
    echo 1 > "$s/attr_allow_any_host"
    [ -f "$s/attr_model" ] && echo "nvmeof-lab-$1" > "$s/attr_model"
    mkdir -p "$s/namespaces/1"
    echo "/dev/$2" > "$s/namespaces/1/device_path"
    echo 1 > "$s/namespaces/1/enable"
}

# subsys_on NAME PATH: a subsystem whose namespace 1 is PATH: a block device (nvmet's bdev
# backend) or a regular file (its file backend; buffered, as tmpfs takes no O_DIRECT).
subsys_on() {
    s="$CFG/subsystems/$(nqn "$1")"
    mkdir -p "$s/namespaces/1" || return 1
    echo 1 > "$s/attr_allow_any_host"
    echo "$2" > "$s/namespaces/1/device_path"
    [ -f "$2" ] && echo 1 > "$s/namespaces/1/buffered_io"
    echo 1 > "$s/namespaces/1/enable"
}

# backends: subsystems `file` (a 64 MiB file in /tmp) and `bdev` (a loop device on another),
# on the loop port, connected over the loop transport.
backends() {
    [ -d /sys/module/nvme_loop ] || { echo "nvme-loop is not loaded: $(grep loop /lab/limits)"; return 1; }
    busybox truncate -s 64M /tmp/ns-file.img /tmp/ns-bdev.img &&
        busybox losetup /dev/loop0 /tmp/ns-bdev.img &&
        subsys_on file /tmp/ns-file.img && subsys_on bdev /dev/loop0 &&
        expose 5 file && expose 5 bdev &&
        connect "transport=loop,nqn=$(nqn file)" && connect "transport=loop,nqn=$(nqn bdev)" &&
        wait_live 20
}

# passthru_pcie: subsystem `passthru`, nvmet's passthrough of QEMU's PCIe controller (identify,
# log pages and I/O go to the real controller), on TCP port 1, connected. Prints the PCIe
# controller and the fabric one. rc 7: this kernel's nvmet has no passthrough (Debian builds it
# from 6.12 on).
passthru_pcie() {
    pc=$(pcie_ctrl) || { echo "no PCIe controller"; return 1; }
    ps="$CFG/subsystems/$(nqn passthru)"
    mkdir -p "$ps" || return 1
    [ -d "$ps/passthru" ] || { rmdir "$ps"; echo "no nvmet passthru in this kernel"; return 7; }
    echo 1 > "$ps/attr_allow_any_host" &&
        echo "/dev/$pc" > "$ps/passthru/device_path" && echo 1 > "$ps/passthru/enable" &&
        expose 1 passthru &&
        connect "transport=tcp,traddr=127.0.0.1,trsvcid=4420,nqn=$(nqn passthru)" &&
        wait_live 20 || return 1
    echo "$pc $(ctrl_of passthru)"
}

# In-band authentication (DH-HMAC-CHAP). AUTH_HOST may connect to subsystem `auth` (nullb0, TCP
# port 1) only with the key nvmet holds for it.
AUTH_HOSTID=5eed0000-0000-4000-8000-000000000001
AUTH_HOST=nqn.2014-08.org.nvmexpress:uuid:$AUTH_HOSTID
# auth_setup KEY: the subsystem, and AUTH_HOST's entry with KEY. rc 7: this kernel's nvmet has no
# authentication (Debian builds it from 6.12 on).
auth_setup() {
    as="$CFG/subsystems/$(nqn auth)"
    mkdir -p "$CFG/hosts/$AUTH_HOST" || return 1
    [ -e "$CFG/hosts/$AUTH_HOST/dhchap_key" ] || { rmdir "$CFG/hosts/$AUTH_HOST"; echo "no nvmet authentication in this kernel"; return 7; }
    auth_key "$1" && mkdir -p "$as/namespaces/1" && echo 0 > "$as/attr_allow_any_host" &&
        echo /dev/nullb0 > "$as/namespaces/1/device_path" && echo 1 > "$as/namespaces/1/enable" &&
        ln -s "$CFG/hosts/$AUTH_HOST" "$as/allowed_hosts/$AUTH_HOST" && expose 1 auth
}
# auth_key KEY: the key nvmet expects from AUTH_HOST from now on.
auth_key() { echo "$1" > "$CFG/hosts/$AUTH_HOST/dhchap_key"; }
# auth_ctrl_key KEY: the key nvmet proves itself with to AUTH_HOST (bidirectional).
auth_ctrl_key() { echo "$1" > "$CFG/hosts/$AUTH_HOST/dhchap_ctrl_key"; }
# auth_connect KEY [OPTIONS]: AUTH_HOST connects to `auth` with KEY.
auth_connect() {
    connect "transport=tcp,traddr=127.0.0.1,trsvcid=4420,nqn=$(nqn auth),hostnqn=$AUTH_HOST,hostid=$AUTH_HOSTID,dhchap_secret=$1${2:+,$2}"
}

# TLS on NVMe/TCP (TLS 1.3 with a pre-shared key). The kernel hands each handshake, the host's
# and the target's, to the userspace daemon tlshd, which Debian 12 does not package: the lab
# brings Debian 13's, with its own libraries and loader, under TRIXIE (xtask/src/trixie.rs).
TRIXIE=/opt/trixie
TLS_HOSTID=5eed0000-0000-4000-8000-000000000002
TLS_HOST=nqn.2014-08.org.nvmexpress:uuid:$TLS_HOSTID
# trixie PROGRAM ARGS: runs TRIXIE/PROGRAM through its own release's loader and libraries.
trixie() {
    p=$1
    shift
    "$TRIXIE/usr/lib64/ld-linux-x86-64.so.2" \
        --library-path "$TRIXIE/usr/lib/x86_64-linux-gnu:$TRIXIE/lib/x86_64-linux-gnu" "$TRIXIE/$p" "$@"
}
# tls_setup: the PSK of TLS_HOST and subsystem `tls` in the kernel's .nvme keyring, tlshd
# looking there, and subsystem `tls` (nullb0) on TCP port 8 (127.0.0.1:4422), which requires
# TLS 1.3. nvme-cli prints the inserted key's serial. rc 7: this kernel cannot do TLS on
# NVMe/TCP (no nvme_keyring: Debian builds it from 6.12 on).
tls_setup() {
    [ -d /sys/module/nvme_keyring ] || { echo "no NVMe TLS keyring in this kernel"; return 7; }
    [ -x "$TRIXIE/usr/sbin/tlshd" ] || { echo "no tlshd in this guest"; return 1; }
    key=$(trixie usr/sbin/nvme gen-tls-key --subsysnqn="$(nqn tls)" --hostnqn="$TLS_HOST") || return 1
    trixie usr/sbin/nvme check-tls-key --subsysnqn="$(nqn tls)" --hostnqn="$TLS_HOST" \
        --keydata="$key" --insert || return 1
    printf '[debug]\nloglevel=2\ntls=0\nnl=0\n[authenticate]\nkeyrings=.nvme\n' > /tmp/tlshd.conf
    trixie usr/sbin/tlshd -c /tmp/tlshd.conf -s > /tmp/tlshd.log 2>&1 &
    echo $! > /tmp/tlshd.pid
    # A handshake the kernel asks for before tlshd joined the handshake family's multicast
    # group fails at once (ESRCH): wait until a generic netlink socket (protocol 16) has joined
    # a group (tlshd's is the guest's only one).
    i=0
    until awk '$2 == 16 && $4 != "00000000" { f = 1 } END { exit !f }' /proc/net/netlink; do
        [ $i -ge 300 ] && { echo "tlshd does not listen:"; cat /tmp/tlshd.log; return 1; }
        sleep 0.1
        i=$((i + 1))
    done
    subsys tls nullb0 && port 8 tcp ipv4 127.0.0.1 4422 || return 1
    echo tls1.3 > "$CFG/ports/8/addr_tsas" || return 1
    expose 8 tls
}
# tls_connect [OPTIONS]: TLS_HOST connects to `tls` over TLS (the kernel finds the PSK by its
# identity in .nvme).
tls_connect() {
    connect "transport=tcp,traddr=127.0.0.1,trsvcid=4422,nqn=$(nqn tls),hostnqn=$TLS_HOST,hostid=$TLS_HOSTID,tls${1:+,$1}"
}

# port ID TRTYPE ADRFAM TRADDR [TRSVCID]
port() {
    p="$CFG/ports/$1"
    mkdir -p "$p" || return 1
    echo "$2" > "$p/addr_trtype"
    [ -n "$3" ] && echo "$3" > "$p/addr_adrfam"
    [ -n "$4" ] && echo "$4" > "$p/addr_traddr"
    [ -n "$5" ] && echo "$5" > "$p/addr_trsvcid"
    return 0
}

# expose PORT NAME / unexpose PORT NAME: link or unlink a subsystem on a port (cut a path).
expose() { ln -s "$CFG/subsystems/$(nqn "$2")" "$CFG/ports/$1/subsystems/$(nqn "$2")"; }
unexpose() { rm -f "$CFG/ports/$1/subsystems/$(nqn "$2")"; }

# netem_towards PORT NETEM...: netem (`loss 10%`, `delay 60ms`) on what the host sends to TCP
# port PORT on lo (a prio qdisc whose third band has it, a u32 filter sending that port there);
# everything else passes. restore_lo takes it away. One such port at a time.
netem_towards() {
    port=$1
    shift
    /usr/bin/tc qdisc add dev lo root handle 1: prio &&
        /usr/bin/tc qdisc add dev lo parent 1:3 handle 30: netem "$@" &&
        /usr/bin/tc filter add dev lo parent 1:0 protocol ip prio 1 u32 \
            match ip dport "$port" 0xffff flowid 1:3
}
# nvme_trace_start NAME: a tracefs instance NAME recording nvme_setup_cmd and nvme_complete_rq
# with the monotonic clock (the programs' bpf_ktime_get_ns), 8 MiB per CPU. Started before the
# agent attaches, ftrace's probe runs first at both tracepoints, so the gaps mostly cancel.
nvme_trace_start() {
    T=/sys/kernel/tracing/instances/$1
    rmdir "$T" 2>/dev/null
    mkdir "$T" || return 1
    echo mono > "$T/trace_clock"
    echo 8192 > "$T/buffer_size_kb"
    echo 1 > "$T/events/nvme/nvme_setup_cmd/enable"
    echo 1 > "$T/events/nvme/nvme_complete_rq/enable"
}
# nvme_trace_stop NAME [CTRL]: stops it, prints `@@OVERRUN N` (events the buffer lost) and the
# events (of controller CTRL, or all) cut to what a join needs (timestamp, event, controller,
# queue, command id, opcode), then removes the instance.
nvme_trace_stop() {
    T=/sys/kernel/tracing/instances/$1
    echo 0 > "$T/events/nvme/nvme_setup_cmd/enable"
    echo 0 > "$T/events/nvme/nvme_complete_rq/enable"
    echo "@@OVERRUN $(cat "$T"/per_cpu/cpu*/stats | awk '/^overrun/ {n += $2} END {print n + 0}')"
    grep -E " nvme_(setup_cmd|complete_rq): ${2:+$2: }" "$T/trace" |
        sed -E 's/^.* ([0-9]+\.[0-9]+: nvme_)/ \1/; s/(cmdid=[0-9]+).*(nvme_cmd_[a-z_]+).*/\1 \2/; s/(cmdid=[0-9]+),.*/\1/'
    rmdir "$T"
}
# tcp_iopolicy POLICY: the tcp subsystem's multipath I/O policy (with round-robin both paths
# carry I/O; numa, the default, keeps one CPU's I/O on one path).
tcp_iopolicy() {
    for s in /sys/class/nvme-subsystem/*; do
        [ "$(cat "$s/subsysnqn")" = "$(nqn tcp)" ] && echo "$1" > "$s/iopolicy"
    done
    true
}
# lose_towards PORT PERCENT: netem drops PERCENT of what the host sends to TCP port PORT.
lose_towards() { netem_towards "$1" loss "$2%"; }
restore_lo() { /usr/bin/tc qdisc del dev lo root 2>/dev/null; true; }

# load_deferred: the modules held back at boot (/mods/defer), in load order: a host whose NVMe
# modules load after the agent started. Any other module not loaded yet is tried again too:
# one that needs a held-back module (which differs between kernels) failed at boot.
load_deferred() {
    while read -r m; do
        n=${m#*-}
        n=$(echo "${n%.ko}" | tr - _)
        [ -d "/sys/module/$n" ] && continue
        if ! insmod "/mods/$m"; then
            grep -qxF "${m#*-}" /mods/defer && return 1
        fi
    done < /mods/order
}

# connect OPTIONS: the host side, as nvme-cli would write it.
connect() { echo "$1" > /dev/nvme-fabrics; }

# The transports. Each sets up its target port and subsystem; `connect_*` attaches the host.
setup_tcp() {
    subsys tcp nullb0 && port 1 tcp ipv4 127.0.0.1 4420 && port 2 tcp ipv4 127.0.0.1 4421 &&
        expose 1 tcp && expose 2 tcp
}
connect_tcp() {
    # Two paths to one subsystem: native multipath makes one head with two paths.
    connect "transport=tcp,traddr=127.0.0.1,trsvcid=4420,nqn=$(nqn tcp),reconnect_delay=1,ctrl_loss_tmo=${1:-600}" &&
        connect "transport=tcp,traddr=127.0.0.1,trsvcid=4421,nqn=$(nqn tcp),reconnect_delay=1,ctrl_loss_tmo=${1:-600}"
}

setup_rdma() {
    /usr/bin/ip link add veth0 type veth peer name veth1 &&
        /usr/bin/ip addr add "$RDMA_ADDR/24" dev veth0 &&
        /usr/bin/ip link set veth0 up && /usr/bin/ip link set veth1 up &&
        /usr/bin/rdma link add rxe0 type rxe netdev veth0 &&
        subsys rdma nullb1 && port 3 rdma ipv4 "$RDMA_ADDR" 4420 && expose 3 rdma
}
connect_rdma() {
    connect "transport=rdma,traddr=$RDMA_ADDR,trsvcid=4420,nqn=$(nqn rdma),reconnect_delay=1,ctrl_loss_tmo=600"
}

fc_name() { echo "nn-$1:pn-$2"; }
setup_fc() {
    [ -d /sys/class/fcloop/ctl ] || { echo "fcloop is not loaded: $(grep fcloop /lab/limits)"; return 1; }
    echo "wwnn=$FC_TGT_WWNN,wwpn=$FC_TGT_WWPN" > /sys/class/fcloop/ctl/add_target_port &&
        echo "wwnn=$FC_HOST_WWNN,wwpn=$FC_HOST_WWPN" > /sys/class/fcloop/ctl/add_local_port &&
        echo "wwnn=$FC_TGT_WWNN,wwpn=$FC_TGT_WWPN,lpwwnn=$FC_HOST_WWNN,lpwwpn=$FC_HOST_WWPN,roles=0x60" > /sys/class/fcloop/ctl/add_remote_port &&
        subsys fc nullb2 && port 4 fc fc "$(fc_name $FC_TGT_WWNN $FC_TGT_WWPN)" && expose 4 fc
}
connect_fc() {
    connect "transport=fc,traddr=$(fc_name $FC_TGT_WWNN $FC_TGT_WWPN),host_traddr=$(fc_name $FC_HOST_WWNN $FC_HOST_WWPN),nqn=$(nqn fc),reconnect_delay=1,ctrl_loss_tmo=600"
}

setup_loop() {
    [ -d /sys/module/nvme_loop ] || { echo "nvme-loop is not loaded: $(grep loop /lab/limits)"; return 1; }
    subsys loop nullb3 && port 5 loop "" "" && expose 5 loop
}
connect_loop() { connect "transport=loop,nqn=$(nqn loop)"; }

# topology: every transport the kernel can do, set up and connected; prints what it skipped.
topology() {
    for t in tcp rdma fc loop; do
        if "setup_$t"; then
            "connect_$t" || echo "@@SKIP $t: connect failed"
        else
            echo "@@SKIP $t: setup failed"
        fi
    done
    wait_live 20
}

# scale_topology N: N controllers, each to a subsystem of its own (scale-1 .. scale-N, all on
# nullb0, which nvmet opens shared): the even ones over loop (port 7) where nvme-loop is loaded,
# the others over TCP (port 6, 127.0.0.1:4430). Each opens one I/O queue per CPU.
scale_topology() {
    port 6 tcp ipv4 127.0.0.1 4430 || return 1
    over_loop=0
    [ -d /sys/module/nvme_loop ] && port 7 loop "" "" && over_loop=1
    i=1
    while [ "$i" -le "$1" ]; do
        subsys "scale-$i" nullb0 || return 1
        if [ $((i % 2)) = 0 ] && [ "$over_loop" = 1 ]; then
            expose 7 "scale-$i" && connect "transport=loop,nqn=$(nqn "scale-$i")" || return 1
        else
            expose 6 "scale-$i" &&
                connect "transport=tcp,traddr=127.0.0.1,trsvcid=4430,nqn=$(nqn "scale-$i")" || return 1
        fi
        i=$((i + 1))
    done
    wait_live 120
}

# read_every_queue N COUNT: COUNT direct 4 KiB reads from every CPU (so on every hardware queue,
# one per CPU) on the namespace of each of scale-1 .. scale-N.
read_every_queue() {
    cpus=$(grep -c '^processor' /proc/cpuinfo)
    i=1
    while [ "$i" -le "$1" ]; do
        d=$(dev_of "scale-$i") || return 9
        c=0
        while [ "$c" -lt "$cpus" ]; do
            busybox taskset "$(printf '%x' $((1 << c)))" \
                dd if="$d" of=/dev/null bs=4k count="$2" skip=$((c * $2)) iflag=direct 2>/dev/null ||
                return 8
            c=$((c + 1))
        done
        i=$((i + 1))
    done
}

# wait_live SECONDS: until every controller is live, or the time is up.
wait_live() {
    i=0
    while [ "$i" -lt "$(($1 * 10))" ]; do
        notlive=0
        for c in /sys/class/nvme/nvme*; do
            [ -e "$c/state" ] || continue
            [ "$(cat "$c/state")" = live ] || notlive=1
        done
        [ "$notlive" = 0 ] && return 0
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}

# ctrl_of NAME [TRSVCID]: the nvmeN of the controller connected to a lab subsystem (by port).
ctrl_of() {
    for c in /sys/class/nvme/nvme*; do
        [ "$(cat "$c/subsysnqn" 2>/dev/null)" = "$(nqn "$1")" ] || continue
        if [ -n "$2" ]; then
            grep -q "trsvcid=$2" "$c/address" || continue
        fi
        echo "${c##*/}"
        return 0
    done
    return 1
}

# pcie_ctrl: the nvmeN of QEMU's emulated PCIe controller (when the lab was booted with one).
pcie_ctrl() {
    for c in /sys/class/nvme/nvme*; do
        [ "$(cat "$c/transport" 2>/dev/null)" = pcie ] && { echo "${c##*/}"; return 0; }
    done
    return 1
}

# pcie_dev: the namespace block device of the emulated PCIe controller. Its subsystem allows a
# single controller (CMIC 0), so the kernel makes no multipath head: the disk hangs off the
# controller itself.
pcie_dev() {
    c=$(pcie_ctrl) || return 1
    for n in "/sys/class/nvme/$c"/nvme*n*; do
        [ -e "/dev/${n##*/}" ] && { echo "/dev/${n##*/}"; return 0; }
    done
    return 1
}

# dev_of NAME: the namespace block device (multipath head) of a lab subsystem.
dev_of() { dev_of_nqn "$(nqn "$1")"; }
dev_of_nqn() {
    for s in /sys/class/nvme-subsystem/*; do
        [ "$(cat "$s/subsysnqn")" = "$1" ] || continue
        for n in "$s"/nvme*n*; do
            [ -e "$n" ] && { echo "/dev/${n##*/}"; return 0; }
        done
    done
    return 1
}

# controllers: one line per controller: name transport state subsysnqn
controllers() {
    for c in /sys/class/nvme/nvme*; do
        echo "${c##*/} $(cat "$c/transport") $(cat "$c/state") $(cat "$c/subsysnqn")"
    done
}

# agent_start [ARGS]: the exporter in the background, its log in /tmp/agent.log.
agent_start() { agent_start_on "$AGENT_PORT" "$@"; }
# agent_start_on PORT [ARGS]: an exporter listening on PORT; one on another port than the lab's
# (a second agent on the node) keeps its pid and log in /tmp/agent-PORT.{pid,log}.
agent_start_on() {
    f=/tmp/agent; [ "$1" = "$AGENT_PORT" ] || f="/tmp/agent-$1"
    p=$1
    shift
    /usr/bin/nvmeof-exporter --web.listen-address=":$p" "$@" > "$f.log" 2>&1 &
    echo $! > "$f.pid"
    i=0
    while [ $i -lt 300 ]; do
        curl -sf "http://127.0.0.1:$p/healthz" > /dev/null && return 0
        kill -0 "$(cat "$f.pid")" 2>/dev/null || { cat "$f.log"; return 1; }
        sleep 0.1
        i=$((i + 1))
    done
    cat "$f.log"
    return 1
}
# agent_stop: SIGTERM, then wait (at most 10 s) until it has exited: its programs are detached and
# its port is free. An orphan turns into a zombie of PID 1 here, which counts as exited.
agent_stop() { agent_stop_on "$AGENT_PORT"; }
# agent_stop_on PORT: the same for the agent agent_start_on PORT started.
agent_stop_on() {
    f=/tmp/agent; [ "$1" = "$AGENT_PORT" ] || f="/tmp/agent-$1"
    [ -f "$f.pid" ] || return 0
    p=$(cat "$f.pid")
    kill "$p" 2>/dev/null
    i=0
    while [ $i -lt 100 ] && [ -e "/proc/$p" ] && ! grep -q '^State:.*Z' "/proc/$p/status" 2>/dev/null; do
        sleep 0.1
        i=$((i + 1))
    done
    kill -9 "$p" 2>/dev/null
    rm -f "$f.pid"
    return 0
}
# agent_restart [ARGS]: a fresh agent: new maps, counters from zero, an empty latency window.
agent_restart() { agent_stop && agent_start "$@"; }
scrape() { curl -sf "http://127.0.0.1:$AGENT_PORT/metrics"; }
