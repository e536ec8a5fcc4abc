#!/usr/bin/env bash
# Fails if anything in the firmware's dependency graph (build tools and
# proc-macros aside) enables an `alloc` or `std` feature, or is a heap
# allocator: the device build must not need a heap.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
tree=$(cargo tree --locked -e normal,features,no-proc-macro --prefix none)
bad=$(printf '%s\n' "$tree" | grep -E 'feature "(alloc|std)"' | sort -u || true)
allocators=$(printf '%s\n' "$tree" | grep -E '^(embedded-alloc|linked_list_allocator|alloc-cortex-m|talc|buddy-alloc) ' | sort -u || true)
if [ -n "$bad$allocators" ]; then
    echo "error: the firmware's dependency graph uses a heap:" >&2
    printf '%s\n' "$bad" "$allocators" >&2
    exit 1
fi
crates=$(cargo tree --locked -e normal,no-proc-macro --prefix none | sed 's/ (\*)$//' | sort -u | wc -l)
echo "no alloc: $crates crates in the firmware graph, none enables alloc or std, no allocator"
