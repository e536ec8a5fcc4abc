#!/usr/bin/env bash
# Builds the example firmware in release four ways and prints what each
# costs — text (flash: code and constants), data (flash and RAM), bss (RAM)
# — and the worker's share of it; reports issue 11's targets (met or
# missed) and fails if a target met is exceeded again.
#
#   shipped          DHCP, DNS, defmt logs at info (the example as shipped)
#   lean             static IP, IP-literal URL, no logs (--no-default-features,
#                    DEFMT_LOG=off)
#   … platform only  the same network stack and one raw request, without the
#                    worker (--features platform-only): the worker's share is
#                    the difference.
#
# outage-core's share is its code by the DWARF line table (inlined code
# counts for the crate it was written in; strings and constants do not),
# measured with share.py when python3 and llvm-dwarfdump are there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

size_tool=$(command -v llvm-size || true)
if [ -z "$size_tool" ]; then
    rustup component add llvm-tools >/dev/null 2>&1 || true
    host=$(rustc -vV | sed -n 's/^host: //p')
    size_tool="$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-size"
fi
[ -x "$size_tool" ] || { echo "error: no llvm-size (install llvm or: rustup component add llvm-tools)" >&2; exit 1; }

# Targets (bytes; KB = 1024 B): issue 11's. Met before the worker's whole
# life moved into outage-core (one lifecycle and one driver for both
# runtimes, N task slots), missed since, and worked back to: the shipped
# flash and RAM and the lean flash are met again and enforced (a build
# above them fails); the core's share is reported until it is met.
SHIPPED_TEXT_MAX=$((80 * 1024))
# Issue 19 (a stop keeps finished outcomes: each retried through the grace
# and given up with its own line; task keys so no task runs twice; refused
# claims backing off) costs the shipped build 1.8 KB, 144 B of which (216 B
# with issue 22's counters) could not be won back: until it is, 80 KiB is
# reported as missed and this ceiling (1 KiB above it) is enforced, so the
# flash cannot drift further.
# Issue 21 (one HTTP/1.1 codec in the core, for both runtimes: 1xx, CL+TE,
# header checks) cost 760 B more, kept under this ceiling (README).
SHIPPED_TEXT_CEIL=$((81 * 1024))
SHIPPED_BSS_MAX=$((16 * 1024))
LEAN_TEXT_MAX=$((64 * 1024))
CORE_MAX=$((4 * 1024))

mkdir -p target/size
# build NAME TARGET_DIR DEFMT_LOG CARGO_ARGS...: the ELF as target/size/NAME.elf.
# The lean builds get a target directory of their own: DEFMT_LOG rebuilds
# every crate that logs.
build() {
    local name=$1 dir=$2 log=$3
    shift 3
    DEFMT_LOG=$log cargo build --release --locked --quiet --target-dir "$dir" "$@"
    cp "$dir/thumbv7em-none-eabihf/release/outage-firmware-nrf52840" "target/size/$name.elf"
}
build shipped target info
build shipped-platform target info --features platform-only
build lean target/lean off --no-default-features
build lean-platform target/lean off --no-default-features --features platform-only

declare -A text data bss
for name in shipped shipped-platform lean lean-platform; do
    read -r t d b _ < <("$size_tool" "target/size/$name.elf" | awk 'NR == 2 { print $1, $2, $3 }')
    text[$name]=$t data[$name]=$d bss[$name]=$b
done

core_src="$(cd ../../core && pwd)/src/"
core_share() {
    if command -v python3 >/dev/null && command -v llvm-dwarfdump >/dev/null; then
        python3 share.py "target/size/$1.elf" "$core_src"
    fi
}
core_shipped=$(core_share shipped)
core_lean=$(core_share lean)

echo "outage-firmware-nrf52840 (nRF52840, release, opt-level z, LTO), bytes:"
printf '  %-44s %7s %6s %7s\n' "" text data bss
row() { printf '  %-44s %7d %6d %7d\n' "$1" "$2" "$3" "$4"; }
for build in shipped lean; do
    case $build in
    shipped) title="shipped (DHCP, DNS, info logs)" ;;
    lean) title="lean (static IP, IP-literal URL, no logs)" ;;
    esac
    row "$title" "${text[$build]}" "${data[$build]}" "${bss[$build]}"
    p=$build-platform
    row "  platform only (network stack, one request)" "${text[$p]}" "${data[$p]}" "${bss[$p]}"
    row "  the worker's share" $((text[$build] - text[$p])) $((data[$build] - data[$p])) \
        $((bss[$build] - bss[$p]))
done
if [ -n "$core_shipped" ]; then
    echo "  outage-core's code: $core_shipped (shipped), $core_lean (lean)"
    for build in shipped lean; do
        echo "    $build, by file: $(python3 share.py --by-file "target/size/$build.elf" "$core_src" |
            awk '{ printf "%s%s %s", sep, $2, $1; sep = ", " }')"
    done
fi

echo "targets missed (reported):"
failed=0
# check WHAT NOW MAX: ok, or FAIL (a target met is exceeded).
check() {
    if [ "$2" -le "$3" ]; then
        printf '  %-30s target %6d, now %6d: ok\n' "$1" "$3" "$2"
    else
        printf '  %-30s target %6d, now %6d: FAIL\n' "$1" "$3" "$2"
        failed=1
    fi
}
# missed WHAT NOW MAX: a target not met yet; reported, not enforced.
missed() {
    local verdict=missed
    [ "$2" -le "$3" ] && verdict="met (make it a check in size.sh)"
    printf '  %-30s target %6d, now %6d: %s\n' "$1" "$3" "$2" "$verdict"
}
missed "shipped text" "${text[shipped]}" "$SHIPPED_TEXT_MAX"
if [ -n "$core_shipped" ]; then
    missed "outage-core's code (shipped)" "$core_shipped" "$CORE_MAX"
    missed "outage-core's code (lean)" "$core_lean" "$CORE_MAX"
else
    echo "  outage-core's code: not measured (needs python3 and llvm-dwarfdump)"
fi
echo "targets met (enforced):"
check "shipped text (ceiling)" "${text[shipped]}" "$SHIPPED_TEXT_CEIL"
check "shipped bss" "${bss[shipped]}" "$SHIPPED_BSS_MAX"
check "lean text" "${text[lean]}" "$LEAN_TEXT_MAX"
if [ "$failed" -ne 0 ]; then
    echo "error: a size target met is exceeded" >&2
    exit 1
fi
