# iommu-lab guest helpers, sourced by /init and by /lab/run.sh.
#
# section NAME CMD [ARGS...]
#   Runs CMD, then prints on stdout:
#     @@BEGIN NAME@@
#     <CMD's stdout; a newline is added if it did not end with one>
#     @@END NAME rc=<CMD's exit code>@@
#     @@BEGIN NAME.stderr@@
#     <CMD's stderr, same rule>
#     @@END NAME.stderr rc=<CMD's exit code>@@
#   and returns CMD's exit code. The .stderr section is always printed (maybe empty).

lab_section_n=0

lab_cat_nl() {
    # Print file $1, adding a final newline if it lacks one.
    if [ -s "$1" ]; then
        cat "$1"
        if [ "$(tail -c 1 "$1" | wc -l)" -eq 0 ]; then
            echo
        fi
    fi
}

section() {
    _lab_name=$1
    shift
    lab_section_n=$((lab_section_n + 1))
    _lab_out=/tmp/lab-section.$$.$lab_section_n.out
    _lab_err=/tmp/lab-section.$$.$lab_section_n.err
    "$@" >"$_lab_out" 2>"$_lab_err"
    _lab_rc=$?
    echo "@@BEGIN $_lab_name@@"
    lab_cat_nl "$_lab_out"
    echo "@@END $_lab_name rc=$_lab_rc@@"
    echo "@@BEGIN $_lab_name.stderr@@"
    lab_cat_nl "$_lab_err"
    echo "@@END $_lab_name.stderr rc=$_lab_rc@@"
    rm -f "$_lab_out" "$_lab_err"
    return $_lab_rc
}

# kernel_groups: one line per IOMMU group, "N BDF BDF ...".
kernel_groups() {
    for _g in /sys/kernel/iommu_groups/*; do
        [ -d "$_g" ] || continue
        _line=${_g##*/}
        for _d in "$_g"/devices/*; do
            [ -e "$_d" ] || continue
            _line="$_line ${_d##*/}"
        done
        echo "$_line"
    done
}

# pci_devices: every PCI device the kernel knows, one address per line.
pci_devices() {
    ls /sys/bus/pci/devices
}

# pci_ids: "BDF vendor:device class header-type driver group" per device.
pci_ids() {
    for _d in /sys/bus/pci/devices/*; do
        _drv=-
        [ -e "$_d/driver" ] && _drv=$(basename "$(readlink "$_d/driver")")
        _grp=-
        [ -e "$_d/iommu_group" ] && _grp=$(basename "$(readlink "$_d/iommu_group")")
        echo "${_d##*/} $(cat "$_d/vendor"):$(cat "$_d/device") $(cat "$_d/class") $_drv $_grp"
    done
}
