#!/usr/bin/env bash
# Fetches the real photographs listed in ../shared/data/*.tsv into data/ (git-ignored).
# Debian packages are downloaded and unpacked with dpkg -x (nothing is installed); the
# scikit-image pair comes from its wheel. Usage: scripts/fetch_data.sh [training|validation|all]
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
shared=${REFSR_SHARED:-../shared}
out=data
mkdir -p "$out/debs" "$out/unpacked" "$out/training" "$out/validation"

fetch_deb() {  # $1 = package name; unpacks into data/unpacked/<pkg> once
  local pkg=$1
  [ -d "$out/unpacked/$pkg" ] && return 0
  ( cd "$out/debs" && ls "${pkg}"_*.deb >/dev/null 2>&1 || apt-get download "$pkg" >/dev/null ) || {
    echo "fetch: apt-get download $pkg failed (run 'apt-get update' first?)" >&2; return 1; }
  dpkg -x "$(ls "$out/debs/${pkg}"_*.deb | head -n1)" "$out/unpacked/$pkg"
}

if [ "$what" = training ] || [ "$what" = all ]; then
  : > "$out/training/ATTRIBUTION.tsv"
  printf 'file\tpackage\tpath_in_package\tlicense\n' >> "$out/training/ATTRIBUTION.tsv"
  tail -n +2 "$shared/data/training-photos.tsv" | while IFS=$'\t' read -r pkg path lic; do
    fetch_deb "$pkg"
    # Plasma wallpapers are all called 2560x1600.jpg: name them by their folder instead.
    name=$(basename "$path")
    case "$path" in */contents/images/*) name="$(basename "$(dirname "$(dirname "$(dirname "$path")")")").${name##*.}";; esac
    cp "$out/unpacked/$pkg$path" "$out/training/$name"
    printf '%s\t%s\t%s\t%s\n' "$name" "$pkg" "$path" "$lic" >> "$out/training/ATTRIBUTION.tsv"
  done
  echo "fetch: $(ls "$out/training" | grep -vc ATTRIBUTION) training photos in $out/training"
fi

if [ "$what" = validation ] || [ "$what" = all ]; then
  : > "$out/validation/pairs.tsv"
  tail -n +2 "$shared/data/validation-pairs.tsv" | while IFS=$'\t' read -r src target ref rel; do
    case "$src" in
      debian:*) pkg=${src#debian:}; fetch_deb "$pkg"; base="$out/unpacked/$pkg";;
      pypi:*) pkg=${src#pypi:}
         if [ ! -d "$out/unpacked/$pkg" ]; then
           tmp=$(mktemp -d); python3 -m pip download -q --no-deps --only-binary=:all: -d "$tmp" "$pkg" >/dev/null
           mkdir -p "$out/unpacked/$pkg"; python3 -m zipfile -e "$tmp"/*.whl "$out/unpacked/$pkg"; rm -rf "$tmp"
         fi
         base="$out/unpacked/$pkg/";;
    esac
    for f in "$target" "$ref"; do cp "$base$f" "$out/validation/$(basename "$f")"; done
    printf '%s\t%s\t%s\t%s\n' "$(basename "$target")" "$(basename "$ref")" "$src" "$rel" >> "$out/validation/pairs.tsv"
  done
  echo "fetch: $(wc -l < "$out/validation/pairs.tsv") validation pairs in $out/validation"
fi
