#!/usr/bin/env bash
# Regenerates the FreeSASA reference outputs in this folder (see README.md). Needs FreeSASA 2.1.2 (Debian package
# freesasa 2.1.2-1) and the shared data folder; run from anywhere: generate.sh [path/to/shared/data]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
data="${1:-$here/../../../../../shared/data}"
opts=(--shrake-rupley --resolution=1000 --probe-radius=1.4 --radii=protor --format=seq)
for name in $(tail -n +2 "$data/small/index.tsv" | cut -f1 | sed 's/\.pdb$//'); do
    freesasa "${opts[@]}" "$data/small/$name.pdb" | sed 1d > "$here/small/$name.seq"
done
# Corpus: the full-atom chains of index.tsv sorted by length (then name); every 8th from the 4th, plus the longest.
awk -F'\t' 'NR > 1 && $8 == "full" { print $4 "\t" $1 }' "$data/index.tsv" | sort -k1,1n -k2,2 \
    | awk -F'\t' '{ rows[NR] = $2 } END { for (i = 4; i <= NR; i += 8) print rows[i]; print rows[NR] }' \
    | while read -r file; do
        name="${file%.pdb.gz}"
        gzip -dc "$data/structures/$file" | freesasa "${opts[@]}" | sed 1d > "$here/corpus/$name.seq"
    done
