#!/usr/bin/env bash
# Builds the example firmware in release and prints what it costs:
# text (flash), data (flash and RAM), bss (RAM).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
cargo build --release --locked --quiet
elf=target/thumbv7em-none-eabihf/release/outage-firmware-nrf52840

size_tool=$(command -v llvm-size || true)
if [ -z "$size_tool" ]; then
    rustup component add llvm-tools >/dev/null 2>&1 || true
    host=$(rustc -vV | sed -n 's/^host: //p')
    size_tool="$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-size"
fi
[ -x "$size_tool" ] || { echo "error: no llvm-size (install llvm or: rustup component add llvm-tools)" >&2; exit 1; }

read -r text data bss _ < <("$size_tool" "$elf" | awk 'NR == 2 { print $1, $2, $3 }')
echo "outage-firmware-nrf52840 (nRF52840, release, opt-level s, LTO):"
printf '  text  %8d B   flash: code and constants\n' "$text"
printf '  data  %8d B   flash and RAM: initialised statics\n' "$data"
printf '  bss   %8d B   RAM: zeroed statics (task futures, buffers, sockets)\n' "$bss"
printf '  flash %8d B of 1048576, RAM %d B of 262144 (before the stack)\n' "$((text + data))" "$((data + bss))"
