#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Instruction mix of CUDA kernels from `cuobjdump -sass` output, for tuning.

For every kernel whose mangled name contains the filter: its instruction count, and the body of its largest loop
(the longest span closed by a backward branch; in the scan kernels, one batch of the walk) by class: floating point,
integer and address arithmetic, shared memory, global/local/constant memory, shuffles, moves and control. Static counts: a loop body that
holds both sides of a run-time branch counts both.

Usage: cuobjdump -sass binary > sass.txt; python3 tests/cuda/sass_mix.py sass.txt [name filter]
"""
import collections
import re
import sys

CLASSES = [  # (class, opcodes before the first '.')
    ("floating point", {"FMUL", "FFMA", "FADD", "MUFU", "FSEL", "FMNMX", "FSETP", "FCHK", "F2F", "F2FP", "HADD2"}),
    ("shared memory", {"LDS", "STS", "LDSM", "ATOMS"}),
    ("global/local/constant", {"LDG", "STG", "LDL", "STL", "LDC", "ULDC", "RED", "ATOMG", "LDGSTS", "LDGDEPBAR", "DEPBAR"}),
    ("shuffles", {"SHFL"}),
    ("control", {"BRA", "BSSY", "BSYNC", "BAR", "WARPSYNC", "NOP", "EXIT", "CALL", "RET", "YIELD", "BMOV"}),
    ("moves", {"MOV", "UMOV", "CS2R", "S2R", "S2UR", "P2R", "R2P", "SEL", "USEL", "HFMA2"}),  # HFMA2.MMA: a constant
]


def opcode(text):
    text = re.sub(r"^@!?U?P\w+\s+", "", text.strip())  # predicate guard
    return text.split()[0].split(".")[0] if text else ""


def class_of(op):
    for name, ops in CLASSES:
        if op in ops:
            return name
    return "integer and address"


def kernels(path):
    """(name, [(address, instruction text)]) per function of a cuobjdump -sass listing."""
    name, body = None, []
    for line in open(path, encoding="utf-8", errors="replace"):
        m = re.search(r"Function : (\S+)", line)
        if m:
            if name:
                yield name, body
            name, body = m.group(1), []
            continue
        m = re.match(r"\s+/\*([0-9a-f]{4,})\*/\s+(.*?);", line)
        if m and name:
            body.append((int(m.group(1), 16), m.group(2)))
    if name:
        yield name, body


def largest_loop(body):
    """Instructions of the longest span [target, branch] closed by a branch to an earlier address, or []."""
    index = {addr: i for i, (addr, _) in enumerate(body)}
    best = (0, -1)
    for i, (addr, text) in enumerate(body):
        m = re.search(r"\bBRA\s+(?:`\()?0x([0-9a-f]+)", text)
        if m:
            target = int(m.group(1), 16)
            if target <= addr and target in index and i - index[target] > best[1] - best[0]:
                best = (index[target], i)
    return body[best[0] : best[1] + 1]


def mix(instructions):
    by_class, by_op = collections.Counter(), collections.Counter()
    for _, text in instructions:
        op = opcode(text)
        by_class[class_of(op)] += 1
        by_op[op] += 1
    return by_class, by_op


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    wanted = sys.argv[2] if len(sys.argv) > 2 else ""
    found = False
    for name, body in kernels(sys.argv[1]):
        if wanted not in name:
            continue
        found = True
        loop = largest_loop(body)
        by_class, by_op = mix(loop)
        print(f"{name}\n  {len(body)} instructions; largest loop {len(loop)}:")
        for cls, n in by_class.most_common():
            print(f"    {cls:22s} {n:6d}")
        print("    top opcodes: " + " ".join(f"{op} {n}" for op, n in by_op.most_common(12)))
    if not found:
        sys.exit(f"no kernel name contains {wanted!r}")


if __name__ == "__main__":
    main()
