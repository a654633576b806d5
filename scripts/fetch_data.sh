#!/usr/bin/env bash
# Fetches the real photographs listed in datasets/*.tsv into data/ (git-ignored).
# Debian packages are downloaded with `apt-get download` and unpacked with dpkg -x (nothing is
# installed); the scikit-image photos come from its wheel. Every photo's source and licence is
# written beside it (ATTRIBUTION.tsv, pairs.tsv).
# Video frames (path#frame=N), files inside Qt .rcc archives (path!inner), .pgm/.ppm images and JPEGs
# turned upright by their EXIF orientation (path#upright) are written as PNG by scripts/data_tools.py, with OpenCV (opencv-python-headless, a project dependency).
# Usage: scripts/fetch_data.sh [training|validation|different-pairs|training-pairs|all]
#   training         data/training (wallpapers), data/training-extra (opencv-doc, scikit-image photos),
#                    data/training-more (photos from many more packages, short side >= 512),
#                    data/training-small (real photos with a shorter side) and data/training-pairs
#   validation       data/validation (pairs.tsv + graf's ground-truth homography), data/validation-extra
#                    and data/different-pairs
#   different-pairs  data/different-pairs only: the yardstick whose reference is a different photograph
#   training-pairs   data/training-pairs only: different-photo pairs for training (other scenes)
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
case "$what" in training|validation|different-pairs|training-pairs|all) ;;
  *) echo "usage: $0 [training|validation|different-pairs|training-pairs|all]" >&2; exit 2;; esac
if [ -n "${PYTHON:-}" ]; then py=$PYTHON; elif [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
if ! "$py" -c "import cv2" 2>/dev/null; then
  echo "fetch: $py has no OpenCV (cv2) for video frames: run 'bash scripts/setup.sh' or set PYTHON=" >&2; exit 2
fi
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

take() {  # $1 = unpacked root, $2 = path (optionally #frame=N or !inner), $3 = destination file
  local base=$1 path=$2 dest=$3
  [ -s "$dest" ] && return 0
  case "$path" in
    *'#frame='*) "$py" scripts/data_tools.py frame "$base${path%%#frame=*}" "${path##*#frame=}" "$dest";;
    *'!'*) "$py" scripts/data_tools.py rcc "$base${path%%!*}" "${path#*!}" "$dest";;
    *.pgm|*.ppm) "$py" scripts/data_tools.py png "$base$path" "$dest";;
    *'#upright') "$py" scripts/data_tools.py png "$base${path%#upright}" "$dest";;
    *) cp "$base$path" "$dest";;
  esac
}

name_of() {  # $1 = prefix, $2 = path → a file name that says where the photo came from
  local prefix=$1 path=$2 stem ext
  case "$path" in
    *'#frame='*) stem=$(basename "${path%%#frame=*}"); printf '%s__%s_f%04d.png' "$prefix" "${stem%.*}" "${path##*#frame=}";;
    *'!'*) stem=$(basename "${path%%!*}"); printf '%s__%s_%s' "$prefix" "${stem%.*}" "$(basename "${path#*!}")";;
    *.pgm|*.ppm) stem=$(basename "$path"); printf '%s__%s.png' "$prefix" "${stem%.*}";;
    *'#upright') stem=$(basename "${path%#upright}"); printf '%s__%s.png' "$prefix" "${stem%.*}";;
    *) printf '%s__%s' "$prefix" "$(basename "$path")";;
  esac
}

more_photos() {  # $1 = list (source, path, licence, what), $2 = folder: named <package>__<file>
  local list=$1 dest=$2 src path lic what base name
  mkdir -p "$dest"
  printf 'file\tsource\tpath_in_package\tlicense\tdescription\n' > "$dest/ATTRIBUTION.tsv"
  while IFS=$'\t' read -r src path lic what; do
    base=$(base_of "$src")
    name=$(name_of "${src#*:}" "$path")
    take "$base" "$path" "$dest/$name"
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$src" "$path" "$lic" "$what" >> "$dest/ATTRIBUTION.tsv"
  done < <(tail -n +2 "$list")
  echo "fetch: $(($(wc -l < "$dest/ATTRIBUTION.tsv") - 1)) photos in $dest"
}

photo_pairs() {  # $1 = list (source, target, reference, relation, licence, scene), $2 = folder
  local list=$1 dest=$2 src target ref rel lic scene base t r
  mkdir -p "$dest"
  printf 'target\treference\tsource\trelation\tlicense\n' > "$dest/pairs.tsv"
  printf 'file\tsource\tpath_in_package\tlicense\tscene\n' > "$dest/ATTRIBUTION.tsv"
  while IFS=$'\t' read -r src target ref rel lic scene; do
    base=$(base_of "$src")
    t=$(name_of "$scene" "$target"); r=$(name_of "$scene" "$ref")
    take "$base" "$target" "$dest/$t"
    take "$base" "$ref" "$dest/$r"
    printf '%s\t%s\t%s\t%s\t%s\n' "$t" "$r" "$src" "$rel" "$lic" >> "$dest/pairs.tsv"
    for f in "$t:$target" "$r:$ref"; do
      grep -q "^${f%%:*}"$'\t' "$dest/ATTRIBUTION.tsv" ||
        printf '%s\t%s\t%s\t%s\t%s\n' "${f%%:*}" "$src" "${f#*:}" "$lic" "$scene" >> "$dest/ATTRIBUTION.tsv"
    done
  done < <(tail -n +2 "$list")
  echo "fetch: $(($(wc -l < "$dest/pairs.tsv") - 1)) pairs, $(($(wc -l < "$dest/ATTRIBUTION.tsv") - 1)) photos in $dest"
}

if [ "$what" = training ] || [ "$what" = all ]; then
  photos "$lists/training-photos.tsv" "$out/training"
  photos "$lists/training-extra-photos.tsv" "$out/training-extra"
  more_photos "$lists/training-more-photos.tsv" "$out/training-more"
  more_photos "$lists/training-small-photos.tsv" "$out/training-small"
fi
if [ "$what" = training ] || [ "$what" = training-pairs ] || [ "$what" = all ]; then
  photo_pairs "$lists/training-pairs.tsv" "$out/training-pairs"
  # Where each reference shows its target (SIFT + MAGSAC homography), for training crops and labels.
  "$py" scripts/align_pairs.py "$out/training-pairs/pairs.tsv"
fi
if [ "$what" = validation ] || [ "$what" = all ]; then
  pairs "$lists/validation-pairs.tsv" "$out/validation"
  pairs "$lists/extra-pairs.tsv" "$out/validation-extra"
fi
if [ "$what" = validation ] || [ "$what" = different-pairs ] || [ "$what" = all ]; then
  photo_pairs "$lists/different-photo-pairs.tsv" "$out/different-pairs"
fi
