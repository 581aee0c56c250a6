#!/usr/bin/env bash
# Stages the TensorFlow bundle for the GPU host and prints the device calls
# that send it and then measure (bench/GPU.md):
#
#   bash bench/gpu_stage.sh BUNDLE_DIR [STAGE_DIR]
#
# BUNDLE_DIR: what shared/tools/gpu-bundle/build.sh wrote (part.*, zstd/,
# unpack.sh). STAGE_DIR (default: .stage in this checkout, which is what a
# call's carry can name) gets hard links of them (copies across file
# systems) and SHA256SUMS; a checkout's .stage is added to .git/info/exclude
# so that it travels only in the calls that carry it.
#
# One call may move 64 MiB, the working tree included, so each part travels
# in a call of its own; unpack.sh, zstd/ and SHA256SUMS go with the first,
# and the last part with the measuring command. The script checks every
# call's size against that limit before printing the plan.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd -P)
bundle=${1:?usage: gpu_stage.sh BUNDLE_DIR [STAGE_DIR]}
stage=$(realpath -m "${2:-$repo/.stage}")
limit_mib=64

ls "$bundle"/part.* >/dev/null 2>&1 || { echo "no part.* in $bundle" >&2; exit 2; }
[ -f "$bundle/unpack.sh" ] && [ -d "$bundle/zstd" ] || {
  echo "$bundle lacks unpack.sh or zstd/ (run build.sh to the end)" >&2; exit 2; }
rm -rf "$stage"
mkdir -p "$stage"
for f in "$bundle"/part.* "$bundle/unpack.sh"; do
  ln "$f" "$stage/" 2>/dev/null || cp "$f" "$stage/"
done
cp -r "$bundle/zstd" "$stage/zstd"
(cd "$stage" && sha256sum part.* > SHA256SUMS)

case "$stage" in
  "$repo"/*) rel=${stage#"$repo"/} ;;
  *) rel=$stage
     echo "note: $stage is outside $repo; a call's carry names paths inside the checkout" >&2 ;;
esac
if [ "${stage#"$repo"/}" != "$stage" ] && git -C "$repo" rev-parse --git-dir >/dev/null 2>&1; then
  if ! git -C "$repo" check-ignore -q "$rel/SHA256SUMS"; then
    exclude=$(git -C "$repo" rev-parse --git-path info/exclude)
    case "$exclude" in /*) ;; *) exclude=$repo/$exclude ;; esac
    mkdir -p "$(dirname "$exclude")"
    echo "/$rel/" >> "$exclude"
    echo "added /$rel/ to $exclude (so it travels only when carried)"
  fi
fi

# What every call sends besides its carry: tracked and untracked, not ignored
# files (and a shared/ folder inside the checkout, if any).
tree_bytes=$(cd "$repo" && { git ls-files -co --exclude-standard -z 2>/dev/null;
                             if [ -d shared ]; then find shared -type f -print0; fi; } |
             { xargs -0 -r stat -c %s 2>/dev/null || true; } |  # deleted files: skipped
             awk '{s += $1} END {print s + 0}')
mib() { awk -v b="$1" 'BEGIN {printf "%.1f", b / 1048576}'; }
tools_bytes=$(du -cb "$stage/unpack.sh" "$stage/zstd" "$stage/SHA256SUMS" | tail -1 | cut -f1)
mapfile -t part_list < <(cd "$stage" && ls part.*)
n=${#part_list[@]}
over=0
for i in "${!part_list[@]}"; do
  p=${part_list[$i]}
  bytes=$(( tree_bytes + $(stat -c %s "$stage/$p") ))
  [ "$i" = 0 ] && bytes=$(( bytes + tools_bytes ))
  if [ "$bytes" -gt $(( limit_mib * 1048576 )) ]; then
    echo "call $((i + 1)) would move $(mib "$bytes") MiB (> $limit_mib MiB): rebuild with smaller parts (build.sh OUTDIR PART_MB)" >&2
    over=1
  fi
done
[ "$over" = 0 ] || exit 3

copy="mkdir -p /tmp/stg && cp -r $rel/* /tmp/stg/"
check="$copy && ls /tmp/stg | wc -l"
echo
echo "Staged $n parts in $stage ($(du -sm "$stage" | cut -f1) MB; working tree $(mib "$tree_bytes") MiB per call)."
echo "Device plan: $n calls, each within 30 s of the one before (a machine idle longer is"
echo "given back, and /tmp/stg with it: then the staging starts again). Each staging call"
echo "prints how many files /tmp/stg holds; it must grow by one per call."
echo
for i in "${!part_list[@]}"; do
  p=${part_list[$i]}
  carry="\"$rel/$p\""
  [ "$i" = 0 ] && carry="$carry, \"$rel/unpack.sh\", \"$rel/zstd\", \"$rel/SHA256SUMS\""
  if [ "$i" -lt $(( n - 1 )) ]; then
    echo "$((i + 1)). run(carry=[$carry], timeout_s=120,"
    echo "       command=\"$check\")"
  else
    echo "$((i + 1)). the measuring call, with the last part: first read status' budget_left_s = L;"
    echo "   T = min(480, L - 90) seconds, then"
    echo "   run(carry=[$carry], timeout_s=T,"
    echo "       command=\"$copy && bash bench/gpu_suite.sh /tmp/stg T\")"
  fi
done
echo
echo "Results: the reply's files (rows.jsonl, table.md, suite.log); the table also ends the output."
echo "Rerun, only if that call broke off before its table (same machine, within 30 s; rows"
echo "already measured are kept in /tmp/gpu_suite and not measured again):"
echo "   run(carry=[], timeout_s=T2, command=\"bash bench/gpu_suite.sh /tmp/stg T2\")"
echo "   with T2 = status' budget_left_s - 60. Then give_back."
