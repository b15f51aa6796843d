#!/bin/sh
# iommu-lab /init: set up, load modules, wait for IOMMU groups, report them on /dev/ttyS1,
# run /lab/run.sh with its stdout on /dev/ttyS1, power off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /tmp /run /dev/pts
# /tmp and /run stay on the initramfs (already RAM): a tmpfs there would hide binaries the host put
# at their own paths, such as a checkout under /tmp.

. /lab/env
. /lab/lib.sh

echo "lab: init on $(uname -r), topology $LAB_TOPOLOGY, iommu $LAB_IOMMU"

# Modules (/lab/modules.list, written by the host): "insmod FILE" in dependency order, "builtin NAME"
# (modules.builtin lists it) and "expect NAME required|optional" (a kernel without loadable modules
# whose modules.builtin does not list NAME: /sys/module/NAME proves it is built in). A module already in
# /sys/module is not loaded again. Failures are logged as FAIL lines, not fatal.
: >/tmp/lab-modules
while read -r _kind _m _req; do
    case "$_kind" in
    insmod)
        _n=$(echo "${_m%%.ko*}" | tr - _)
        if [ -d "/sys/module/$_n" ]; then
            echo "ok $_m (already in /sys/module)" >>/tmp/lab-modules
        elif _o=$(insmod "/lib/modules/$_m" 2>&1); then
            if [ -d "/sys/module/$_n" ]; then
                echo "ok $_m" >>/tmp/lab-modules
            else
                echo "lab: insmod $_m succeeded but /sys/module/$_n is missing"
                echo "FAIL $_m not in /sys/module" >>/tmp/lab-modules
            fi
        else
            echo "lab: insmod $_m failed: $_o"
            echo "FAIL $_m $_o" >>/tmp/lab-modules
        fi
        ;;
    builtin)
        echo "builtin $_m" >>/tmp/lab-modules
        ;;
    expect)
        if [ -d "/sys/module/$_m" ]; then
            echo "builtin $_m (in /sys/module)" >>/tmp/lab-modules
        elif [ "$_req" = required ]; then
            echo "lab: module $_m is neither loadable nor in /sys/module"
            echo "FAIL $_m neither loadable nor built in" >>/tmp/lab-modules
        else
            echo "absent $_m" >>/tmp/lab-modules
        fi
        ;;
    esac
done </lab/modules.list

# Wait (up to ~20 s) for IOMMU groups, then until every PCI device has a group or the number
# of grouped devices stayed the same for 1 s.
_t0=$(cut -d' ' -f1 /proc/uptime)
if [ "$LAB_IOMMU" != none ]; then
    _i=0
    while [ -z "$(ls /sys/kernel/iommu_groups 2>/dev/null)" ] && [ $_i -lt 200 ]; do
        sleep 0.1
        _i=$((_i + 1))
    done
    _prev=-1
    _stable=0
    while [ $_i -lt 200 ]; do
        _all=1
        for _d in /sys/bus/pci/devices/*; do
            [ -e "$_d/iommu_group" ] || _all=0
        done
        [ $_all = 1 ] && break
        _cur=$(ls -d /sys/kernel/iommu_groups/*/devices/* 2>/dev/null | wc -l)
        if [ "$_cur" = "$_prev" ]; then
            _stable=$((_stable + 1))
            [ $_stable -ge 10 ] && break
        else
            _stable=0
            _prev=$_cur
        fi
        sleep 0.1
        _i=$((_i + 1))
    done
    [ -n "$(ls /sys/kernel/iommu_groups 2>/dev/null)" ] || echo "lab: no IOMMU groups after 20 s"
fi
_t1=$(cut -d' ' -f1 /proc/uptime)

lab_info() {
    echo "kernel $(uname -r)"
    echo "topology $LAB_TOPOLOGY"
    echo "iommu $LAB_IOMMU"
    echo "uptime-before-wait $_t0"
    echo "uptime-groups-ready $_t1"
    echo "cmdline $(cat /proc/cmdline)"
}

stty -F /dev/ttyS1 raw -echo 2>/dev/null
{
    section lab-info lab_info
    section modules cat /tmp/lab-modules
    section kernel-groups kernel_groups
    section pci-devices pci_devices
    section pci-ids pci_ids
} >/dev/ttyS1 2>&1

echo "lab: running /lab/run.sh"
(cd /lab && sh /lab/run.sh) >/dev/ttyS1
_rc=$?
echo "lab: /lab/run.sh exited with $_rc"
{
    echo "@@LAB-DONE rc=$_rc uptime=$(cut -d' ' -f1 /proc/uptime)@@"
} >/dev/ttyS1 2>&1
sync
poweroff -f
