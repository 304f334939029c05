#!/usr/bin/env bash
# Creates the pinned virtualenv DEST from LOCK with PYTHON, atomically and at most once
# at a time: concurrent Bazel servers (two clones, CI) wait on the same lock file.
# Usage: make_venv.sh PYTHON LOCK DEST
set -euo pipefail
python=$1 lock=$2 dest=$3

mkdir -p "$(dirname "$dest")"
exec 9>"$dest.lock"
flock 9

if [ -f "$dest/.complete" ]; then
  exit 0
fi

tmp="$dest.partial"
rm -rf "$tmp" "$dest"
echo "creating virtualenv $dest from $(basename "$lock") (one-off, a few minutes)" >&2
"$python" -m venv "$tmp"
# The lock is complete (every transitive dependency pinned), so --no-deps keeps pip from
# resolving anything on its own and the result is exactly the lock.
if ! "$tmp/bin/python" -m pip install --disable-pip-version-check --no-deps \
    --no-warn-script-location -r "$lock" >"$tmp.log" 2>&1; then
  tail -n 40 "$tmp.log" >&2
  echo "pip failed; full log: $tmp.log" >&2
  exit 1
fi
rm -f "$tmp.log"
# A venv records its own absolute path in scripts and pyvenv.cfg: build it in place.
mv "$tmp" "$dest"
# Re-point the activation scripts at the final directory (pip's console scripts use
# the interpreter path directly, fixed below).
grep -rlI --null "$tmp" "$dest/bin" | xargs -0 -r sed -i "s|$tmp|$dest|g"
touch "$dest/.complete"
