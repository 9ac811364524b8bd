#!/usr/bin/env bash
# stamp-build.sh: a copy of a sockherd binary that reports another build.
#
# sockherd keeps its build label in its data as the 16-byte mark
# `sockherd-build` NUL `:` followed by 48 bytes of label, NUL-padded
# (src/reexec/version.rs); `sockherd --version` prints `sockherd 0.1.0
# (LABEL)`. Writing another label into those 48 bytes of a copy gives
# "another build" without building one: what the tests and the package test
# upgrade to, and what the bench re-executes into.
#
# Usage: scripts/stamp-build.sh SRC LABEL DEST
#   SRC    a sockherd binary (any file with the mark exactly once);
#   LABEL  at most 48 bytes of printable text, no NUL; "" clears the label;
#   DEST   written as a new file (mode 0755) and renamed into place, so a
#          DEST that is running (a manager's binary) is replaced the way a
#          package upgrade replaces it, never written into (ETXTBSY), and a
#          reader never sees half a file. SRC may be DEST.
# Prints "DEST: LABEL" on success. Exits 1 when the mark is not found exactly
# once, 2 on bad arguments. Needs bash, coreutils (dd, od, head, mktemp) and
# GNU grep.
set -euo pipefail
export LC_ALL=C # byte offsets and byte lengths

MARK_TEXT=sockherd-build # then NUL, then ':'
MARK_LEN=16
LABEL_MAX=48

# die MESSAGE [STATUS]
die() { echo "stamp-build: $1" >&2; exit "${2:-1}"; }

[ $# = 3 ] || die "usage: $0 SRC LABEL DEST" 2
src=$1 label=$2 dest=$3
[ -f "$src" ] || die "$src: no such file" 2
[ -r "$src" ] || die "$src: not readable" 2
((${#label} <= LABEL_MAX)) || die "label '$label' is ${#label} bytes long; at most $LABEL_MAX fit" 2
case $label in
  *[![:print:]]*) die "label '$label' holds a character that is not printable ASCII" 2 ;;
esac

# The offsets of the mark: every `sockherd-build` followed by NUL and ':'.
# grep finds the text (-a: binary as text, -b -o: the byte offset of each
# match); dd and od read the two bytes after it.
offsets=()
while IFS=: read -r off _; do
  next=$(dd if="$src" bs=1 skip=$((off + ${#MARK_TEXT})) count=2 status=none | od -An -tx1 | tr -d ' \n')
  [ "$next" = 003a ] && offsets+=("$off")
done < <(grep -aboF "$MARK_TEXT" "$src" || true)
case ${#offsets[@]} in
  1) ;;
  0) die "$src: no build mark ('$MARK_TEXT\\0:') in it: not a sockherd binary with a build label block" ;;
  *) die "$src: the build mark is there ${#offsets[@]} times (at bytes ${offsets[*]}): cannot tell which block to stamp" ;;
esac
at=$((offsets[0] + MARK_LEN))

dir=$(dirname "$dest")
[ -d "$dir" ] || die "$dir: no such directory" 2
tmp=$(mktemp "$dir/.stamp-build.XXXXXX")
trap 'rm -f "$tmp"' EXIT
cat "$src" >"$tmp"
# The label and its padding: exactly 48 bytes over the old ones.
{ printf '%s' "$label"; head -c $((LABEL_MAX - ${#label})) /dev/zero; } |
  dd of="$tmp" bs=1 seek="$at" count="$LABEL_MAX" conv=notrunc status=none
chmod 0755 "$tmp"
mv -f "$tmp" "$dest"
trap - EXIT

# Read back what a running copy will report.
got=$(dd if="$dest" bs=1 skip="$at" count="$LABEL_MAX" status=none | tr -d '\0')
[ "$got" = "$label" ] || die "$dest: wrote '$label' but read back '$got'"
echo "$dest: ${label:-(no label)}"
