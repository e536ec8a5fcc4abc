#!/usr/bin/env python3
"""Code bytes of an ELF by the source they came from, through the DWARF line
table: every address range of the line program counts for the file its row
names, so code inlined into another crate's function still counts for the
crate it was written in. Constants and strings (.rodata) are not counted.

    share.py ELF [PATH_PART ...]
    share.py --by-file ELF PATH_PART

prints, for each PATH_PART, the bytes of code from files whose path holds
it (e.g. `core/src/` for outage-core), one number per line; with
`--by-file`, the bytes of each such file, largest first (where a crate's
share goes). Needs llvm-dwarfdump (LLVM's, any recent version)."""

import re
import subprocess
import sys


def rows(elf):
    """(address, size, file) for every row of every line program."""
    info = subprocess.run(
        ["llvm-dwarfdump", "--debug-info", "-r", "0", elf],
        capture_output=True, text=True, check=True,
    ).stdout
    # The compilation directory of each unit, by its line program's offset:
    # file names with directory index 0 are relative to it.
    comp_dir, stmt = {}, None
    for line in info.splitlines():
        m = re.search(r"DW_AT_stmt_list\s*\((0x[0-9a-f]+)\)", line)
        if m:
            stmt = int(m.group(1), 16)
        m = re.search(r'DW_AT_comp_dir\s*\("([^"]*)"\)', line)
        if m and stmt is not None:
            comp_dir[stmt], stmt = m.group(1), None
    lines = subprocess.run(
        ["llvm-dwarfdump", "--debug-line", elf],
        capture_output=True, text=True, check=True,
    ).stdout
    for program in lines.split("debug_line[")[1:]:
        offset = int(program[: program.index("]")], 16)
        dirs = {0: comp_dir.get(offset, "")}
        for m in re.finditer(r'include_directories\[\s*(\d+)\] = "([^"]*)"', program):
            dirs[int(m.group(1))] = m.group(2)
        files = {}
        pattern = r'file_names\[\s*(\d+)\]:\s*\n\s*name: "([^"]*)"\s*\n\s*dir_index: (\d+)'
        for m in re.finditer(pattern, program):
            d = dirs.get(int(m.group(3)), "")
            if not d.startswith("/"):
                d = dirs[0] + "/" + d
            name = m.group(2)
            files[int(m.group(1))] = name if name.startswith("/") else d + "/" + name
        seq = []
        for m in re.finditer(r"^0x([0-9a-f]+)\s+\d+\s+\d+\s+(\d+)\s+\d+\s+\d+\s*(.*)$", program, re.M):
            seq.append((int(m.group(1), 16), files.get(int(m.group(2)), "?"), "end_sequence" in m.group(3)))
        for (addr, name, end), (nxt, _, _) in zip(seq, seq[1:]):
            if not end and 0 < nxt - addr < 1 << 20:
                yield addr, nxt - addr, name


def main():
    if sys.argv[1] == "--by-file":
        elf, part = sys.argv[2], sys.argv[3]
        files = {}
        for _, size, name in rows(elf):
            if part in name:
                short = name[name.index(part) + len(part):]
                files[short] = files.get(short, 0) + size
        for name, size in sorted(files.items(), key=lambda kv: -kv[1]):
            print(f"{size:6d}  {name}")
        return
    elf, parts = sys.argv[1], sys.argv[2:]
    totals = dict.fromkeys(parts, 0)
    for _, size, name in rows(elf):
        for part in parts:
            if part in name:
                totals[part] += size
    for part in parts:
        print(totals[part])


if __name__ == "__main__":
    main()
