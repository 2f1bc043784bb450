#!/bin/busybox sh
# PID 1 of the lab VM. Mounts the kernel's filesystems, loads the lab's modules, then serves the
# host's commands on the second serial port (ttyS1): each request is one line
# "CMD <id> <base64 script>", each answer "@@BEGIN <id>", the output in base64, "@@END <id> <rc>".
# The console (ttyS0) carries the kernel log and the "@@READY" line the host waits for.
/bin/busybox --install -s /bin
export PATH=/usr/bin:/bin:/sbin:/usr/sbin
export LD_LIBRARY_PATH=/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
ip link set lo up

# Modules: the order file lists them dependencies first. Options that the lab needs:
# four memory-backed null_blk devices (one per transport's subsystem), so data reads back.
# Those named in /mods/defer (a test's choice) are left for `load_deferred` (lab.sh).
while read -r m; do
    [ -f /mods/defer ] && grep -qxF "${m#*-}" /mods/defer && continue
    case "$m" in
        *null_blk.ko)
            insmod "/mods/$m" nr_devices=4 gb=1 memory_backed=1 || echo "@@MODFAIL $m"
            # 5.10 has no memory_backed parameter (it ignores it, and its devices drop writes):
            # there the four devices are made through configfs instead, below.
            if [ ! -e /sys/module/null_blk/parameters/memory_backed ]; then
                rmmod null_blk && insmod "/mods/$m" nr_devices=0 && NULLB_CONFIGFS=1
            fi ;;
        *) insmod "/mods/$m" 2>/tmp/insmod.err || { grep -q 'File exists' /tmp/insmod.err || echo "@@MODFAIL $m $(cat /tmp/insmod.err)"; } ;;
    esac
done < /mods/order
mount -t configfs none /sys/kernel/config 2>/dev/null
# Named nullbN like the module's own: 5.10 names a configfs device after its index (0, 1, ...
# in creation order), later kernels after the item.
if [ -n "$NULLB_CONFIGFS" ]; then
    for i in 0 1 2 3; do
        d=/sys/kernel/config/nullb/nullb$i
        { mkdir "$d" && echo 1024 > "$d/size" && echo 1 > "$d/memory_backed" && echo 1 > "$d/power"; } ||
            echo "@@MODFAIL nullb$i (configfs)"
    done
fi

# The NIC that carries the agent's port to the host (QEMU user networking, restricted: the
# guest has no way out).
for dev in /sys/class/net/*; do
    n=${dev##*/}
    case "$n" in
        lo|veth*) ;;
        *) /usr/bin/ip addr add 10.0.2.15/24 dev "$n" && /usr/bin/ip link set "$n" up ;;
    esac
done

# Open the control port (raw, no echo) before saying ready: bytes that reach a closed port are lost.
exec 3<>/dev/ttyS1
stty -F /dev/ttyS1 raw -echo
echo "@@READY $(uname -r)"
while read -r kw id b64 <&3; do
    [ "$kw" = CMD ] || continue
    echo "$b64" | base64 -d > "/tmp/cmd.$id"
    ( cd / && . /lab/lab.sh && . "/tmp/cmd.$id" ) > "/tmp/out.$id" 2>&1 < /dev/null
    rc=$?
    { echo "@@BEGIN $id"; base64 "/tmp/out.$id"; echo "@@END $id $rc"; } >&3
    rm -f "/tmp/cmd.$id" "/tmp/out.$id"
done
echo "@@CONTROL-CLOSED"
poweroff -f
