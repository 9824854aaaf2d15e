# Sourced by the scripts that need Python tools. `ensure_venv DIR PIN...`
# installs the pinned packages into the virtualenv DIR once (a marker file
# there records the pins; other pins install again); false when that is not
# possible (offline on a fresh machine).
ensure_venv() {
  local dir=$1 marker=$1/.pinned
  shift
  if [ -f "$marker" ] && [ "$(cat "$marker")" = "$*" ]; then
    return 0
  fi
  [ -x "$dir/bin/python" ] || python3 -m venv "$dir" || return 1
  echo "installing $* into $dir"
  "$dir/bin/pip" install -q --disable-pip-version-check "$@" || return 1
  echo "$*" > "$marker"
}
