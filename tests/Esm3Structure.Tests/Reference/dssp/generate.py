#!/usr/bin/env python3
"""Writes mkdssp's secondary structure of PDB files as one line per chain: name<TAB>letters.

One letter per residue of the file, in file order: mkdssp's DSSP letter (H B E G I P T S), '-' for its blank (coil),
and '.' for a residue mkdssp left out (it lacks one of N, CA, C, O). Standard library only; needs mkdssp on PATH.

usage: generate.py [--drop RESSEQ:ATOM] OUT.tsv FILE.pdb[.gz]...
  --drop removes that atom (author residue number, atom name) from every input before running mkdssp.
"""
import gzip
import os
import subprocess
import sys
import tempfile


def residue_keys(text):
    keys, seen = [], set()
    for line in text.splitlines():
        if line.startswith(("ATOM", "HETATM")):
            key = (line[21], line[22:26].strip(), line[26].strip())
            if key not in seen:
                seen.add(key)
                keys.append(key)
    return keys


def drop_atom(text, drop):
    resseq, atom = drop.split(":")
    keep = [l for l in text.splitlines()
            if not (l.startswith("ATOM") and l[22:26].strip() == resseq and l[12:16].strip() == atom)]
    return "\n".join(keep) + "\n"


def mkdssp_letters(text):
    with tempfile.TemporaryDirectory() as d:
        pdb, out = os.path.join(d, "in.pdb"), os.path.join(d, "out.dssp")
        with open(pdb, "w") as f:
            f.write(text)
        subprocess.run(["mkdssp", "--output-format", "dssp", pdb, out], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        lines = open(out).read().splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("  #  RESIDUE")) + 1
    letters = {}
    for l in lines[start:]:
        if len(l) > 16 and l[13] != "!":  # '!' lines mark chain breaks, not residues
            letters[(l[11], l[5:10].strip(), l[10].strip())] = "-" if l[16] == " " else l[16]
    return letters


def main(argv):
    drop = None
    if argv and argv[0] == "--drop":
        drop, argv = argv[1], argv[2:]
    out_path, files = argv[0], argv[1:]
    with open(out_path, "w") as out:
        for f in files:
            name = os.path.basename(f).replace(".gz", "").replace(".pdb", "")
            text = gzip.open(f, "rt").read() if f.endswith(".gz") else open(f).read()
            if drop:
                text = drop_atom(text, drop)
            letters = mkdssp_letters(text)
            out.write(name + "\t" + "".join(letters.get(k, ".") for k in residue_keys(text)) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
