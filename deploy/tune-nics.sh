#!/bin/bash
# tune-nics.sh - pin the NICs' queues to the CPUs of ringrelay's workers, so that one flow is
# received, steered and served on one core (deploy/README.md explains the whole set-up).
#
# For each NIC named (default: every physical one, i.e. with a device behind it; lo never):
#   - with --channels, set the combined channel count to the number of worker CPUs
#     (ethtool -L DEV combined N, capped at the driver's maximum; skipped where unsupported);
#   - spread the RX/TX queue interrupts over the worker CPUs: queue q -> CPU number q modulo
#     the count, through /proc/irq/IRQ/smp_affinity_list (RX and TX of one queue together);
#     with fewer queues than CPUs, RPS (queues/rx-q/rps_cpus) hands each queue's flows on to
#     the CPUs that have no queue (else a worker without a queue would get no connection:
#     the listeners steer to the receiving CPU); with enough queues, RPS is off;
#   - a device without interrupts per queue (veth, most virtual devices): RPS over every
#     worker CPU on each rx queue (the flow hash picks the CPU, so a flow stays on one);
#   - XPS to match: queues/tx-q/xps_cpus = the CPUs of queue q (CPU q modulo the count, and
#     with more CPUs than queues every CPU j with j modulo the queue count = q), so a worker
#     sends on the queue whose interrupt its own CPU takes.
# The worker CPUs are those ringrelay pins its workers to: worker i on the i-th CPU the
# daemon may run on. By default they are the CPUs this script may run on (run it under the
# daemon's CPUAffinity=/taskset, or say --cpus); --workers N keeps the first N.
#
# Prints every decision; --dry-run prints the plan and changes nothing. Idempotent: a value
# already right is left alone and reported "unchanged", so a second run writes nothing.
# Needs root for the changes (not for --dry-run). Debian 12: bash, procps (irqbalance check)
# and, for --channels only, ethtool.
#
# CPU lists travel as space-separated numbers and are split on purpose where used unquoted.
# shellcheck disable=SC2086
set -eu
set -o pipefail

PROG=tune-nics
DRY=0
CHANNELS=0
CPU_LIST=""
WORKERS=0
DEVS=()

usage() {
    cat <<'EOF'
usage: tune-nics.sh [--dry-run] [--cpus LIST] [--workers N] [--channels] [DEV...]
  DEV...        interfaces to tune (default: every physical one: /sys/class/net/*/device)
  --cpus LIST   the workers' CPUs, e.g. 0-3,8-11 (default: the CPUs this script may run on)
  --workers N   only the first N of those CPUs (ringrelay [server] workers = N)
  --channels    also set the combined channel count to the number of CPUs (ethtool -L;
                the NIC resets its queues: expect a short interruption)
  --dry-run     print what would be done, change nothing
EOF
}

say() { echo "$PROG: $*"; }
warn() { echo "$PROG: warning: $*" >&2; }
die() { echo "$PROG: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
    --dry-run) DRY=1 ;;
    --channels) CHANNELS=1 ;;
    --cpus) [ $# -ge 2 ] || die "--cpus needs a list (0-3,8)"; CPU_LIST=$2; shift ;;
    --cpus=*) CPU_LIST=${1#--cpus=} ;;
    --workers) [ $# -ge 2 ] || die "--workers needs a number"; WORKERS=$2; shift ;;
    --workers=*) WORKERS=${1#--workers=} ;;
    -h|--help) usage; exit 0 ;;
    -*) usage >&2; die "unknown option $1" ;;
    *) DEVS+=("$1") ;;
    esac
    shift
done

# ---- CPU lists and masks --------------------------------------------------------------------

# expand_list LIST - "0-3,8" -> "0 1 2 3 8" (the kernel's list format)
expand_list() {
    local out="" part a b
    for part in ${1//,/ }; do
        [ -n "$part" ] || continue
        if [[ $part =~ ^([0-9]+)-([0-9]+)$ ]]; then
            a=${BASH_REMATCH[1]}; b=${BASH_REMATCH[2]}
            [ "$a" -le "$b" ] || die "bad CPU range '$part'"
            while [ "$a" -le "$b" ]; do out="$out $a"; a=$((a + 1)); done
        elif [[ $part =~ ^[0-9]+$ ]]; then
            out="$out $part"
        else
            die "bad CPU list '$1' (want e.g. 0-3,8)"
        fi
    done
    echo ${out# }
}

# sort_cpus CPU... - ascending, without duplicates
sort_cpus() { printf '%s\n' "$@" | sort -n -u | tr '\n' ' ' | sed 's/ $//'; }

# compress CPU... - "0 1 2 3 8" -> "0-3,8"
compress() {
    local out="" start="" prev="" c
    for c in $(sort_cpus "$@"); do
        if [ -n "$prev" ] && [ "$c" -eq $((prev + 1)) ]; then prev=$c; continue; fi
        [ -n "$start" ] && out="$out,$start$([ "$prev" != "$start" ] && echo "-$prev")"
        start=$c; prev=$c
    done
    [ -n "$start" ] && out="$out,$start$([ "$prev" != "$start" ] && echo "-$prev")"
    echo "${out#,}"
}

# mask_of CPU... - the kernel's bitmap format: 32-bit hex words, most significant first
mask_of() {
    local max=0 c w words out=""
    [ $# -gt 0 ] || { echo 0; return 0; }
    for c in "$@"; do [ "$c" -gt "$max" ] && max=$c; done
    words=$((max / 32 + 1))
    for ((w = words - 1; w >= 0; w--)); do
        local v=0
        for c in "$@"; do
            [ $((c / 32)) -eq "$w" ] && v=$((v | (1 << (c % 32))))
        done
        out="$out,$(printf '%08x' "$v")"
    done
    echo "${out#,}"
}

# cpus_of_mask MASK - "00000000,00000023" -> "0 1 5"
cpus_of_mask() {
    local hex=${1//,/} out="" i n b
    n=${#hex}
    for ((i = 0; i < n; i++)); do
        local v=$((16#${hex:n-1-i:1}))
        for b in 0 1 2 3; do
            [ $(((v >> b) & 1)) -eq 1 ] && out="$out $((i * 4 + b))"
        done
    done
    echo $out
}

# ---- the worker CPUs -------------------------------------------------------------------------

if [ -z "$CPU_LIST" ]; then
    CPU_LIST=$(awk '/^Cpus_allowed_list:/ { print $2 }' /proc/self/status)
    [ -n "$CPU_LIST" ] || die "cannot read this process's CPUs; give --cpus"
fi
# shellcheck disable=SC2207
CPUS=($(expand_list "$CPU_LIST"))
[ ${#CPUS[@]} -gt 0 ] || die "no CPUs in '$CPU_LIST'"
ONLINE=" $(expand_list "$(cat /sys/devices/system/cpu/online)") "
for c in "${CPUS[@]}"; do
    case "$ONLINE" in *" $c "*) ;; *) die "CPU $c is not online (online: $(compress $ONLINE))" ;; esac
done
case "$WORKERS" in ''|*[!0-9]*) die "--workers wants a number, not '$WORKERS'" ;; esac
if [ "$WORKERS" -gt 0 ]; then
    [ "$WORKERS" -le ${#CPUS[@]} ] ||
        die "--workers $WORKERS but only ${#CPUS[@]} CPUs ($(compress "${CPUS[@]}"))"
    CPUS=("${CPUS[@]:0:$WORKERS}")
fi
NCPU=${#CPUS[@]}

# queue_cpus Q COUNT - the CPUs of queue Q of COUNT queues: CPUS[j] for every j = Q modulo
# COUNT, and CPUS[Q modulo NCPU] (more queues than CPUs: queues share CPUs)
queue_cpus() {
    local q=$1 count=$2 j out="${CPUS[$(($1 % NCPU))]}"
    for ((j = q; j < NCPU; j += count)); do out="$out ${CPUS[$j]}"; done
    sort_cpus $out
}

# ---- devices ---------------------------------------------------------------------------------

if [ ${#DEVS[@]} -eq 0 ]; then
    for d in /sys/class/net/*; do
        n=${d##*/}
        [ "$n" != lo ] && [ -e "$d/device" ] && DEVS+=("$n")
    done
    [ ${#DEVS[@]} -gt 0 ] || die "no physical network interface found; name the ones to tune"
fi
for n in "${DEVS[@]}"; do
    [ -d "/sys/class/net/$n" ] || die "no interface '$n' (ip -br link lists them)"
done
if [ "$DRY" -eq 0 ] && [ "$(id -u)" != 0 ]; then
    die "changing IRQ affinity and queue masks needs root (or try --dry-run)"
fi

# put VALUE FILE WHAT - write VALUE into FILE unless --dry-run; false (with a warning) when
# the kernel refuses it
put() {
    [ "$DRY" -eq 1 ] && return 0
    if ! { printf '%s\n' "$1" > "$2"; } 2>/dev/null; then
        warn "$3: the kernel refused $1 in $2"
        return 1
    fi
}

PRE=""
[ "$DRY" -eq 1 ] && PRE="[dry-run] "
say "${PRE}worker CPUs: $(compress "${CPUS[@]}") ($NCPU)"

# set_channels DEV - combined channels = NCPU (capped at the maximum), with --channels
set_channels() {
    local dev=$1 out max cur want
    if ! command -v ethtool >/dev/null 2>&1; then
        warn "$dev: ethtool is not installed (apt-get install ethtool): channels left alone"
        return 0
    fi
    if ! out=$(ethtool -l "$dev" 2>/dev/null); then
        say "${PRE}$dev: channels: not supported by the driver, left alone"
        return 0
    fi
    max=$(echo "$out" | awk '/^Combined:/ { print $2; exit }')
    cur=$(echo "$out" | awk '/^Combined:/ { n++; if (n == 2) print $2 }')
    if ! [[ $max =~ ^[0-9]+$ ]] || [ "$max" -eq 0 ] || ! [[ $cur =~ ^[0-9]+$ ]]; then
        say "${PRE}$dev: channels: no combined channels (separate RX/TX ones), left alone"
        return 0
    fi
    want=$NCPU
    [ "$want" -gt "$max" ] && want=$max
    if [ "$cur" -eq "$want" ]; then
        say "${PRE}$dev: channels: combined $cur (unchanged)"
        return 0
    fi
    say "${PRE}$dev: channels: combined $cur -> $want (maximum $max): ethtool -L $dev combined $want"
    if [ "$DRY" -eq 0 ] && ! ethtool -L "$dev" combined "$want"; then
        warn "$dev: ethtool -L $dev combined $want failed; the queues stay as they are"
    fi
    [ "$DRY" -eq 1 ] && say "[dry-run] $dev: the interrupts below are those of the current channels"
    return 0
}

# irq_name IRQ - the name its handler registered (what /proc/interrupts shows last)
irq_name() {
    local n=""
    [ -r "/sys/kernel/irq/$1/actions" ] && n=$(cat "/sys/kernel/irq/$1/actions")
    [ -n "$n" ] || n=$(awk -v irq="$1:" '$1 == irq { print $NF }' /proc/interrupts)
    echo "$n"
}

# queue_irqs DEV - "IRQ QUEUE NAME" lines for the queue interrupts of DEV. Candidates: the
# MSI vectors of its device (or of the PCI function above it, as for virtio-net) and the IRQs
# named "DEV-..." or "...-DEV-...". Queue interrupts among them have a name that ends in a
# queue word and a number (eth0-TxRx-3, virtio0-input.3, mlx5_comp3@pci:..., eth0-fp-3) or
# is DEV-number (eth0-3); configuration, admin and other vectors have no such name.
queue_irqs() {
    local dev=$1 irqs="" d irq name
    for d in "/sys/class/net/$dev/device/msi_irqs" "/sys/class/net/$dev/device/../msi_irqs"; do
        if [ -d "$d" ]; then
            irqs=$(ls "$d")
            break
        fi
    done
    irqs="$irqs $(awk -v p="$dev-" 'index($NF, p) == 1 || index($NF, "-" p) > 0 {
                                        sub(":", "", $1); print $1 }' /proc/interrupts)"
    for irq in $(printf '%s\n' $irqs | sort -n -u); do
        [ -d "/proc/irq/$irq" ] || continue
        name=$(irq_name "$irq")
        if [[ ${name,,} =~ (txrx|rxtx|rx|tx|input|output|comp|fp|queue|blk|ch)[-_.]?([0-9]+)(@.*)?$ ]]; then
            echo "$irq ${BASH_REMATCH[2]} $name"
        elif [[ $name =~ (^|-)"$dev"-([0-9]+)$ ]]; then     # sfc and others: eth0-3
            echo "$irq ${BASH_REMATCH[2]} $name"
        fi
    done
}

# pin_irqs DEV - each queue interrupt to its CPU; sets NQ to the number of queues with
# interrupts (0: DEV has none)
NQ=0
pin_irqs() {
    local dev=$1 lines irq q name want have
    NQ=0
    lines=$(queue_irqs "$dev")
    [ -n "$lines" ] || return 0
    NQ=$(echo "$lines" | awk '{ print $2 }' | sort -n -u | wc -l)
    while read -r irq q name; do
        want=${CPUS[$((q % NCPU))]}
        have=$(cat "/proc/irq/$irq/smp_affinity_list")
        if [ "$(expand_list "$have")" = "$want" ]; then
            say "${PRE}$dev: irq $irq $name (queue $q): CPU $want (unchanged)"
        else
            say "${PRE}$dev: irq $irq $name (queue $q): smp_affinity_list $have -> $want"
            put "$want" "/proc/irq/$irq/smp_affinity_list" "$dev irq $irq" ||
                warn "$dev: irq $irq is managed by the kernel (it spreads such vectors itself)"
        fi
    done <<< "$lines"
    return 0
}

# set_queue_masks DEV KIND FILE HOW - queues/KIND-q/FILE for every queue q: HOW = spread
# (queue_cpus q count), all (every worker CPU) or none (off)
set_queue_masks() {
    local dev=$1 kind=$2 file=$3 how=$4 qs count q path want have raw
    qs=$( (ls -d "/sys/class/net/$dev/queues/$kind-"* 2>/dev/null || true) |
         sed "s/.*\/$kind-//" | sort -n)
    count=$(echo "$qs" | grep -c . || true)
    if [ "$count" -eq 0 ]; then
        say "${PRE}$dev: no $kind queues"
        return 0
    fi
    for q in $qs; do
        path=/sys/class/net/$dev/queues/$kind-$q/$file
        # xps_cpus of a single-queue device reads ENOENT: there is nothing to choose
        if ! raw=$(cat "$path" 2>/dev/null); then
            say "${PRE}$dev: $kind-$q $file: not available (single queue), left alone"
            continue
        fi
        case "$how" in
        spread) want=$(queue_cpus "$q" "$count") ;;
        all) want=$(sort_cpus "${CPUS[@]}") ;;
        none) want="" ;;
        esac
        have=$(cpus_of_mask "$raw")
        if [ "$have" = "$want" ]; then
            say "${PRE}$dev: $kind-$q $file: CPUs $(show $want) (unchanged)"
        else
            say "${PRE}$dev: $kind-$q $file: CPUs $(show $have) -> $(show $want) (mask $(mask_of $want))"
            put "$(mask_of $want)" "$path" "$dev $kind-$q" || true
        fi
    done
}

# show CPU... - "0-3" or "none"
show() { if [ $# -eq 0 ]; then echo none; else compress "$@"; fi; }

if pgrep -x irqbalance >/dev/null 2>&1; then
    warn "irqbalance is running and will move these interrupts again: stop it (systemctl disable --now irqbalance) or ban them (deploy/README.md)"
fi

for dev in "${DEVS[@]}"; do
    if [ "$dev" = lo ]; then
        say "${PRE}lo: loopback has no queues to pin (its receive work runs on the sender's CPU): skipped"
        continue
    fi
    [ "$CHANNELS" -eq 1 ] && set_channels "$dev"
    pin_irqs "$dev"
    if [ "$NQ" -eq 0 ]; then
        say "${PRE}$dev: no interrupts per queue: RPS spreads its receive work over the worker CPUs by flow hash"
        set_queue_masks "$dev" rx rps_cpus all
    elif [ "$NQ" -lt "$NCPU" ]; then
        say "${PRE}$dev: $NQ queue(s) for $NCPU worker CPUs: RPS hands each queue's flows on to the CPUs without a queue (--channels gives them queues where the NIC has enough)"
        set_queue_masks "$dev" rx rps_cpus spread
    else
        set_queue_masks "$dev" rx rps_cpus none
    fi
    set_queue_masks "$dev" tx xps_cpus spread
done
say "${PRE}done"
